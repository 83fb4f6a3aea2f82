"""How a run judged output values, as a repro folder must judge them again: the bound or the run's tolerance."""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.op.judging import Tolerance


@dataclass(frozen=True)
class Criterion:
    """How a run judged output values: the rounding-error bound (`tolerance` None) or a fixed tolerance."""

    tolerance: Tolerance | None = None
    #: the bound's summation model(s), described as the run recorded them
    accumulation: str | None = None

    @property
    def text(self) -> str:
        if self.tolerance is None:
            return "the rounding-error bound" + (f" ({self.accumulation})" if self.accumulation else "")
        return f"atol={self.tolerance.atol:g} rtol={self.tolerance.rtol:g}"

    def as_dict(self) -> dict:
        if self.tolerance is None:
            return {"kind": "bound", "accumulation": self.accumulation}
        return {"kind": "tolerance", "atol": self.tolerance.atol, "rtol": self.tolerance.rtol}


#: the default criterion of a run without --atol/--rtol
BOUND = Criterion()
