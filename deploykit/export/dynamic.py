"""Dynamic axes of an export: which axis of which input gets which symbol.

`--dynamic-axis AXIS=NAME` names an axis on every input that has it; `--dynamic-axis INPUT:AXIS=NAME`
on one input, given by its ONNX name (`input`, or `input_0`, `input_1`, ... with several inputs)
or by the position of its example input (0, 1, ...).  A symbol stands for one size: decoders such
as compressai's hyperprior take inputs at different resolutions, and one symbol on both would
declare them equal, which the runtimes then refuse or mis-plan.  So a symbol whose axes differ in
size in the example inputs is a usage error, with the per-input options to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deploykit.errors import UsageError

_REQUEST = re.compile(r"(?:(?P<input>[^:=]+):)?(?P<axis>[0-9]+)=(?P<name>.+)")


@dataclass(frozen=True)
class AxisRequest:
    """One dynamic axis as asked for: `input` None means every input that has the axis."""

    axis: int
    name: str
    input: str | None = None
    option: str = ""  # the option as typed, for messages

    @property
    def label(self) -> str:
        return self.option or f"--dynamic-axis {self.axis}={self.name}"


def parse_request(text: str) -> AxisRequest:
    """`AXIS=NAME` or `INPUT:AXIS=NAME` (digits only for AXIS: str.isdigit() takes '²', int() does not)."""
    found = _REQUEST.fullmatch(text)
    if found is None:
        raise UsageError(f"--dynamic-axis {text!r} must be AXIS=NAME or INPUT:AXIS=NAME, e.g. 3=time or input_1:2=height")
    return AxisRequest(int(found["axis"]), found["name"], found["input"], f"--dynamic-axis {text}")


def batch_request() -> AxisRequest:
    return AxisRequest(0, "batch", None, "--dynamic-batch")


def input_names(count: int) -> list[str]:
    """The ONNX input names export writes: `input` alone, else `input_0`, `input_1`, ..."""
    return [f"input_{i}" for i in range(count)] if count > 1 else ["input"]


def _shape(tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "a scalar"


def _input_index(request: AxisRequest, wanted: str, names: list[str]) -> int:
    """The input a per-input request names (`wanted`, its `input`): its ONNX name, or the position of its example input."""
    if wanted in names:
        return names.index(wanted)
    if wanted.isascii() and wanted.isdigit() and int(wanted) < len(names):
        return int(wanted)
    known = f"the only input is {names[0]} (position 0)" if len(names) == 1 else \
        f"the inputs are {', '.join(names)} (positions 0 to {len(names) - 1})"
    raise UsageError(f"{request.label}: no input {wanted!r}; {known}")


def _targets(request: AxisRequest, inputs: tuple, names: list[str]) -> list[int]:
    """The inputs a request applies to; a usage error when none has its axis."""
    if request.input is not None:
        index = _input_index(request, request.input, names)
        tensor = inputs[index]
        if request.axis >= tensor.dim():
            raise UsageError(
                f"{request.label}: {names[index]} is {_shape(tensor)}, which has no axis {request.axis} (rank {tensor.dim()})"
            )
        return [index]
    having = [i for i, tensor in enumerate(inputs) if request.axis < tensor.dim()]
    if not having:
        shapes = ", ".join(f"{name} is {_shape(tensor)}" for name, tensor in zip(names, inputs))
        raise UsageError(f"{request.label}: there is no axis {request.axis} on any input ({shapes})")
    return having


def _assign(axes: dict[int, dict[int, str]], request: AxisRequest, index: int, names: list[str]) -> None:
    """Give axis `request.axis` of input `index` its symbol; a second, different symbol is an error."""
    current = axes.setdefault(index, {}).get(request.axis)
    if current is not None and current != request.name:
        where = f" on {names[index]}" if len(names) > 1 else ""
        raise UsageError(f"{request.label}: axis {request.axis} is already dynamic as {current!r}{where}")
    axes[index][request.axis] = request.name


def _check_one_size_per_symbol(axes: dict[int, dict[int, str]], inputs: tuple, names: list[str],
                               origin: dict[str, AxisRequest]) -> None:
    """Axes that share a symbol must have one size in the example inputs (the symbol is one size)."""
    sizes: dict[str, list[tuple[int, int, int]]] = {}
    for index, named in sorted(axes.items()):
        for axis, name in sorted(named.items()):
            sizes.setdefault(name, []).append((index, axis, int(inputs[index].shape[axis])))
    for name, places in sizes.items():
        if len({size for _, _, size in places}) > 1:
            raise UsageError(_clash(name, places, names, origin[name]))


def _clash(name: str, places: list[tuple[int, int, int]], names: list[str], request: AxisRequest) -> str:
    listing = ", ".join(f"{names[i]} axis {axis} is {size}" for i, axis, size in places)
    fix = " ".join(
        f"--dynamic-axis {names[i]}:{axis}={name if n == 0 else f'{name}_{n}'}" for n, (i, axis, _) in enumerate(places)
    )
    return f"{request.label}: one symbol {name!r} for axes of different sizes ({listing}); name them apart: {fix}"


def resolve(requests: list[AxisRequest], inputs: tuple) -> dict[int, dict[int, str]]:
    """Input position -> {axis: symbol} for the export, every request checked against the inputs."""
    names = input_names(len(inputs))
    axes: dict[int, dict[int, str]] = {}
    origin: dict[str, AxisRequest] = {}
    for request in requests:
        for index in _targets(request, inputs, names):
            _assign(axes, request, index, names)
        origin.setdefault(request.name, request)
    axes = {index: named for index, named in axes.items() if named}
    _check_one_size_per_symbol(axes, inputs, names, origin)
    return axes


def describe(axes: dict[int, dict[int, str]], count: int) -> str:
    """`h (input_0 axis 2), hz (input_1 axis 2)`: the symbols and where they are, for messages."""
    names = input_names(count)
    return ", ".join(
        f"{name} ({names[index]} axis {axis})" for index, named in sorted(axes.items()) for axis, name in sorted(named.items())
    )
