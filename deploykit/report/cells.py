"""Table-cell formatting shared by every report."""

from __future__ import annotations


def fmt(value: float | None, spec: str = ".3g") -> str:
    """A number for a table cell; '-' where nothing was measured."""
    return "-" if value is None else format(value, spec)
