"""Failure classes: which non-pass results are one problem, and which config shows it best.

A class is (backend, verdict, the known divergence it matches or none, signature).  The signature
is the failure with every number, list and generated name taken out, so two configs that fail the
same way share it: for a refusal or a crash the runtime's message, for `accepted-invalid` the
spec rules the model broke, for a wrong shape the direction it is wrong in.  Wrong values
(`drift`, `nonfinite`) have no message to tell two causes apart; a second cause with the same
signature on one backend is found once the first is fixed or listed in known_divergences.yaml.

Classes are computed from stored results alone (pure data), so a fuzz run read back from the
database gives the same classes its search printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from deploykit.op.judging import SKIPPED
from deploykit.op.spec import DEFAULT_OPSET, DTYPES, ConvTransposeSpec
from deploykit.results.result import Result

_GENERATED_NAMES = re.compile(r"ConvTranspose_[0-9a-f]{12}|deploykit_[0-9a-f]{12}|/\S+")
_NUMPY_SCALARS = re.compile(r"np\.\w+\(([^()]*)\)")  # np.int64(3) -> 3: NumPy 2 prints scalars so
_ENUM_VALUES = re.compile(r"=[A-Z][A-Z_]+\b")  # auto_pad=SAME_UPPER -> auto_pad=..
_LISTS = re.compile(r"[\[{(][^\[\]{}()]*[\]})]")
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
SIGNATURE_LIMIT = 160


@dataclass(frozen=True, order=True)
class ClassKey:
    backend: str
    verdict: str
    known_divergence: str | None
    signature: str


@dataclass
class FailureClass:
    """One class, how often the search met it, and its smallest config (the one to report)."""

    key: ClassKey
    count: int
    minimal: Result

    @property
    def minimal_spec(self) -> ConvTransposeSpec:
        from deploykit.results.dbcheck import stored_spec

        return stored_spec(self.minimal)

    def as_dict(self) -> dict:
        """The `--json` record."""
        return {
            "backend": self.key.backend, "verdict": self.key.verdict, "known_divergence": self.key.known_divergence,
            "signature": self.key.signature, "count": self.count, "minimal_spec": self.minimal.spec,
            "config_id": self.minimal.config_id, "label": self.minimal.label, "reason": self.minimal.reason,
        }


def _without_numbers(text: str) -> str:
    text = _GENERATED_NAMES.sub("<name>", _NUMPY_SCALARS.sub(r"\1", text))
    text = _ENUM_VALUES.sub("=..", text)
    previous = None
    while previous != text:  # nested lists collapse from the inside out
        previous, text = text, _LISTS.sub("\0", text)
    text = _NUMBERS.sub("N", text).replace("\0", "[..]")
    return " ".join(text.split())


def _shape_direction(result: Result) -> str:
    expected, actual = result.expected_shape or [], result.actual_shape or []
    if len(expected) != len(actual):
        return "output has the wrong rank"
    signs = sorted({"larger" if a > e else "smaller" for a, e in zip(actual[2:], expected[2:]) if a != e})
    channels = "" if actual[:2] == expected[:2] else "batch or channel count differs; "
    return channels + ("spatial size " + " and ".join(signs) + " than the spec text" if signs else "").strip()


def signature(result: Result) -> str:
    """The failure without its numbers: what two configs failing the same way have in common."""
    if result.verdict == "shape-mismatch":
        return _shape_direction(result)
    if result.verdict in ("drift", "nonfinite"):
        return "values beyond the rounding-error bound" if result.verdict == "drift" else "NaN/Inf where the reference is finite"
    reason = result.reason
    if result.verdict == "accepted-invalid" and " although " in reason:
        rules = reason.split(" although ", 1)[1].split("; ")
        return "ran a model with " + "; ".join(sorted({_without_numbers(rule) for rule in rules}))
    return _without_numbers(reason)[:SIGNATURE_LIMIT]


def class_of(result: Result) -> ClassKey | None:
    """The class of a non-pass result; None for a pass or a documented skip."""
    if result.verdict == "pass" or result.verdict in SKIPPED:
        return None
    return ClassKey(result.backend, result.verdict, result.known_divergence, signature(result))


def size_key(spec: dict) -> tuple:
    """Smaller is simpler, in the order shrinking reduces: rank, channels, spatial size, kernel,
    then every attribute's distance from its plainest value."""
    shape, kernel = spec["input_shape"], spec["kernel_shape"]
    spatial = shape[2:]
    return (
        len(spatial), max(shape[1], spec["out_channels"]), shape[1] + spec["out_channels"],
        max(spatial), sum(spatial), max(kernel), sum(kernel), shape[0], spec["group"],
        sum(spec["strides"]), sum(spec["dilations"]), sum(spec["pads"]), sum(spec["output_padding"]),
        spec["output_shape"] is not None, spec["auto_pad"] != "NOTSET", spec["bias"], spec["weights_as_inputs"],
        DTYPES.index(spec["dtype"]), spec["opset"] != DEFAULT_OPSET, spec["opset"], spec.get("expect", "accept"),
    )


def group(results: Iterable[Result]) -> list[FailureClass]:
    """Every class among `results`, each with its count and smallest config, in a stable order."""
    found: dict[ClassKey, FailureClass] = {}
    for result in results:
        key = class_of(result)
        if key is None:
            continue
        seen = found.get(key)
        if seen is None:
            found[key] = FailureClass(key, 1, result)
            continue
        seen.count += 1
        if size_key(result.spec) < size_key(seen.minimal.spec):
            seen.minimal = result
    return [found[key] for key in sorted(found, key=lambda k: (k.backend, k.known_divergence is not None, k))]
