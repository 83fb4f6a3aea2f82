"""What one backend did with one case (`Outcome`, before any verdict), and a runtime's error on one line.

They sit apart from `execute` so that the isolation child and `conformance judge`, which make Outcomes of their
own, need not import the execution path that uses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from deploykit.backends.timing import Stats

#: What a backend did before any judging: "ok" (it produced outputs), or the verdict that says why not.
Status = Literal["ok", "unavailable", "unsupported", "rejected", "crash"]

_ONNXRUNTIME_NOISE = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def one_line(error: BaseException, limit: int | None = None) -> str:
    """The informative part of an exception message, on one line, whole unless `limit` is given:
    a runtime's explanation often comes last, so results keep all of it (only the terminal table
    cuts a long reason, and says where the whole one is)."""
    text = str(error) or type(error).__name__
    if "Status Message: " in text:
        text = text.split("Status Message: ", 1)[1]
    text = _ONNXRUNTIME_NOISE.sub("", text)
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Outcome:
    """What one backend did with one case under one build config (no verdict on the numbers yet)."""

    status: Status
    reason: str = ""
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    setup_ms: float | None = None  # activate(): session or engine creation
    duration_ms: float | None = None  # the backend's whole phase: activate, infer, timing
    stats: Stats | None = None  # latency, when asked for
    timing_problem: str | None = None  # why latency was not measured (never changes the status)
    #: outputs read back from decimal text (`conformance judge`): each value's possible distance
    #: from the one the backend computed, and how they were read; the bound is widened by it
    reading_error: np.ndarray | None = None
    reading: str = ""
