"""The small protocol every backend implements, after Polygraphy's runners.

A backend is a factory with facts about itself (name, availability, what it cannot express,
how it accumulates); a runner is one prepared model with `activate / infer / deactivate`, so
session or engine creation is never mixed with inference (and never inside a timed region).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

if TYPE_CHECKING:
    from deploykit.bound import Accumulation
    from deploykit.onnxgen import Case
    from deploykit.spec import ConvTransposeSpec


@dataclass(frozen=True)
class Availability:
    available: bool
    version: str | None
    reason: str = ""


class Runner(Protocol):
    def activate(self) -> None:
        """Build the session/engine. Raising here means the backend refused the model."""

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run once and return Y as a host NumPy array."""

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Callable[[], float]:
        """Prepare for timing once (bind inputs and outputs on the device) and return a function
        that runs once and returns its latency in ms.  Host copies are inside the timed region
        only with `include_transfers`."""

    def deactivate(self) -> None:
        """Free the session/engine."""


class Backend:
    """Base class with the defaults most backends want; override what differs."""

    name: str = ""
    description: str = ""
    device: str = "cpu"
    #: pip extra that installs what this backend needs (shown when it is unavailable)
    extra: str | None = None
    #: runs from the spec (not the ONNX file), so an arbitrary model must map to one spec
    needs_spec: bool = False
    #: "fp32" (TF32 off, the conformance default) or "tf32"; GPU backends read it
    precision: str = "fp32"

    def probe(self) -> Availability:
        """Is the package importable and the hardware present?  Must not raise."""
        return Availability(True, None)

    def unsupported_reason(self, spec: "ConvTransposeSpec") -> str | None:
        """A documented limit of the backend for this config, or None when it should run it."""
        return None

    def accumulation(self, dtype: str) -> tuple["Accumulation", ...]:
        """How the backend sums for `dtype`: the error bound is the largest over these models.

        The default, one float32 sum rounded once for float16/bfloat16, is what ORT's MLAS and
        oneDNN were measured to do; a backend that differs must declare it, with a test that
        emulates its order (tests/test_accumulation.py).
        """
        from deploykit.bound import OneSum

        return (OneSum("float32" if dtype in ("float16", "bfloat16") else dtype),)

    def runner(self, case: "Case", threads: int | None = None) -> Runner:
        raise NotImplementedError


class CallableRunner:
    """A runner around a plain function, for backends with no session to build."""

    def __init__(self, function, prepare=None) -> None:
        self._function = function
        self._prepare = prepare

    def activate(self) -> None:
        if self._prepare is not None:
            self._prepare()

    def infer(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._function(feeds)

    def iteration(self, feeds: dict[str, np.ndarray], include_transfers: bool = False) -> Callable[[], float]:
        from deploykit.timing import host_timed

        return host_timed(lambda: self._function(feeds))

    def deactivate(self) -> None:
        pass
