"""Run parameters compared by what they mean.

`--backends ort-cpu,reference` and `--backends reference,ort-cpu` run the same tasks: lists whose
order changes nothing (backends, dtypes, precisions) compare as sets wherever a command checks
that two runs, or a run and the options given again, agree (`conformance merge`, `conformance run
--resume`, `conformance fuzz --resume`).  A different set is still a different run.
"""

from __future__ import annotations

from typing import Any

#: parameters that are lists whose order does not change what runs
UNORDERED = frozenset({"backends", "dtypes", "precisions"})


def comparable(name: str, value: Any) -> Any:
    """The value as it matters for `name`: a frozenset for an unordered list, else the value itself."""
    if name in UNORDERED and isinstance(value, (list, tuple)):
        return frozenset(value)
    return value


def same(name: str, left: Any, right: Any) -> bool:
    """Whether two values of parameter `name` ask for the same run."""
    return comparable(name, left) == comparable(name, right)
