"""One ConvTranspose configuration, validated and resolved exactly as the ONNX text says.

Everything downstream (the reference, the ONNX generator, the backends, the verdicts) reads its
shapes from here, so the ONNX ConvTranspose-22 rules are written down once.  Where runtimes or
ONNX shape inference decide differently from the spec text, the spec text wins here and the
difference is reported by the harness, not copied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")
DTYPE_SHORT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64"}
AUTO_PADS: tuple[str, ...] = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
DEFAULT_OPSET = 17
MIN_OPSET = 11  # ConvTranspose-11 is the first version with today's attribute semantics.
MAX_OPSET = 23  # The newest opset onnxruntime 1.31 runs; ConvTranspose itself last changed in 22.
BFLOAT16_MIN_OPSET = 22  # ConvTranspose-22 added bfloat16 to the type constraint T.
EXPECTATIONS = ("accept", "reject")


class _OnnxDefault(tuple[int, ...]):
    """The default of a per-axis attribute: the ONNX default once per spatial axis, once the rank is known.

    An empty tuple of its own class, so that the attribute's type stays `tuple[int, ...]` and the
    default is still told apart from an explicit `[]`, which is a length error.
    """


#: strides, pads, output_padding and dilations left out: `ConvTransposeSpec.__post_init__` fills in the ONNX default
ONNX_DEFAULT: tuple[int, ...] = _OnnxDefault()


class SpecError(ValueError):
    """The configuration cannot be built at all (wrong lengths, negative sizes, unknown names)."""


def _is_int(value: Any) -> bool:
    """True for a real integer; bool is an int subclass in Python but never a size or a count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(value: Any, what: str) -> None:
    if not _is_int(value) or value < 1:
        raise SpecError(f"{what} must be a positive integer, got {value!r}")


def _check_bool(value: Any, what: str) -> None:
    """Refuse truthy stand-ins: `bool("false")` is True, so a quoted YAML value would flip the meaning."""
    if not isinstance(value, bool):
        raise SpecError(f"{what} must be true or false, got {value!r}")


def _tuple(value: Any, length: int, what: str, default: int | None = None) -> tuple[int, ...]:
    """Normalise an attribute: None or ONNX_DEFAULT -> default, a scalar -> repeated, a list -> checked length."""
    if value is None or value is ONNX_DEFAULT:
        if default is None:
            raise SpecError(f"{what} is required")
        return (default,) * length
    if _is_int(value):
        return (value,) * length
    if not isinstance(value, (list, tuple)):
        raise SpecError(f"{what} must be an integer or a list of integers, got {value!r}")
    items = tuple(value)
    if not all(_is_int(v) for v in items):
        raise SpecError(f"{what} must hold integers, got {list(items)!r}")
    if len(items) != length:
        raise SpecError(f"{what} has {len(items)} values, expected {length} for this input rank")
    return items


def kernel_extent(kernel: int, dilation: int) -> int:
    """Span of a dilated kernel along one axis."""
    return (kernel - 1) * dilation + 1


def natural_size(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
) -> tuple[int, ...]:
    """Output size before padding, per axis: stride*(in-1) + output_padding + kernel extent.

    The one place this formula lives: padding resolution, the spec's shapes and the reference's
    col2im buffer all read it from here.
    """
    return tuple(
        s * (n - 1) + op + kernel_extent(k, d)
        for n, k, s, d, op in zip(in_spatial, kernel, strides, dilations, output_padding)
    )


def split_total_padding(total: int, tail_heavy: bool) -> tuple[int, int]:
    """Split total padding as the spec's pseudo-code does, with Python's floor division.

    SAME_UPPER puts the odd unit at the end (tail-heavy), every other mode at the start.  A
    negative total (a kernel extent smaller than the stride, or an output_shape larger than the
    natural output) gives negative pads, which mean zero extension of the output; floor
    division is what the ONNX node test `test_convtranspose_output_shape` (total -1) expects.
    """
    if tail_heavy:
        begin = total // 2
        return begin, total - begin
    end = total // 2
    return total - end, end


def resolve_pads(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output_padding: Sequence[int],
    pads: Sequence[int],
    auto_pad: str,
    output_shape: Sequence[int] | None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return (begin, end) pads per spatial axis; negative values mean zero extension."""
    rank = len(in_spatial)
    natural = natural_size(in_spatial, kernel, strides, dilations, output_padding)
    if output_shape is not None:
        targets: list[int] | None = list(output_shape)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        targets = [in_spatial[i] * strides[i] for i in range(rank)]
    else:
        targets = None
    if targets is None:
        if auto_pad == "VALID":
            return (0,) * rank, (0,) * rank
        return tuple(pads[:rank]), tuple(pads[rank:])
    splits = [split_total_padding(natural[i] - targets[i], auto_pad == "SAME_UPPER") for i in range(rank)]
    return tuple(b for b, _ in splits), tuple(e for _, e in splits)


@dataclass(frozen=True)
class ConvTransposeSpec:
    """One immutable ConvTranspose configuration with ONNX attribute names.

    Omitted attributes take the ONNX defaults.  `pads` is [begin..., end...] as in ONNX.
    `expect="reject"` marks a deliberately spec-invalid configuration (a negative case) so that
    backends that wrongly accept it are found; `name` is a human label and not part of the id.
    """

    input_shape: tuple[int, ...]
    out_channels: int
    kernel_shape: tuple[int, ...]
    strides: tuple[int, ...] = ONNX_DEFAULT
    pads: tuple[int, ...] = ONNX_DEFAULT
    output_padding: tuple[int, ...] = ONNX_DEFAULT
    dilations: tuple[int, ...] = ONNX_DEFAULT
    group: int = 1
    auto_pad: str = "NOTSET"
    output_shape: tuple[int, ...] | None = None
    bias: bool = True
    dtype: str = "float32"
    opset: int = DEFAULT_OPSET
    weights_as_inputs: bool = False
    expect: str = "accept"
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.input_shape, (list, tuple)):
            raise SpecError(f"input_shape must be an integer or a list of integers, got {self.input_shape!r}")
        shape = _tuple(self.input_shape, len(self.input_shape), "input_shape")
        if not 3 <= len(shape) <= 5:
            raise SpecError(
                f"input_shape {list(shape)} must be [N, C, *spatial] with 1, 2 or 3 spatial axes"
            )
        if any(d < 1 for d in shape):
            raise SpecError(f"input_shape {list(shape)} has a dimension below 1")
        rank = len(shape) - 2
        set_ = object.__setattr__
        set_(self, "input_shape", shape)
        set_(self, "kernel_shape", _tuple(self.kernel_shape, rank, "kernel_shape"))
        set_(self, "strides", _tuple(self.strides, rank, "strides", 1))
        set_(self, "dilations", _tuple(self.dilations, rank, "dilations", 1))
        set_(self, "output_padding", _tuple(self.output_padding, rank, "output_padding", 0))
        pads = self.pads
        if isinstance(pads, (list, tuple)) and len(pads) == 2:
            begin, end = tuple(pads)  # a (begin, end) pair applies to every axis
            pads = (begin,) * rank + (end,) * rank
        set_(self, "pads", _tuple(pads, 2 * rank, "pads", 0))
        if self.output_shape is not None:
            set_(self, "output_shape", _tuple(self.output_shape, rank, "output_shape"))
        for what in ("kernel_shape", "strides", "dilations"):
            values = getattr(self, what)
            if any(v < 1 for v in values):
                raise SpecError(f"{what} {list(values)} must be at least 1 on every axis")
        for what in ("pads", "output_padding"):
            values = getattr(self, what)
            if any(v < 0 for v in values):
                raise SpecError(f"{what} {list(values)} must not be negative")
        if self.output_shape is not None and any(v < 1 for v in self.output_shape):
            raise SpecError(f"output_shape {list(self.output_shape)} must be at least 1 on every axis")
        _check_positive_int(self.out_channels, "out_channels")
        _check_positive_int(self.group, "group")
        if self.auto_pad not in AUTO_PADS:
            raise SpecError(f"auto_pad {self.auto_pad!r} is not one of {', '.join(AUTO_PADS)}")
        if self.dtype not in DTYPES:
            raise SpecError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if not _is_int(self.opset) or not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise SpecError(f"opset {self.opset!r} is outside the supported range {MIN_OPSET}..{MAX_OPSET}")
        if self.dtype == "bfloat16" and self.opset < BFLOAT16_MIN_OPSET:
            raise SpecError(
                f"bfloat16 ConvTranspose needs opset >= {BFLOAT16_MIN_OPSET}, got opset {self.opset}"
            )
        if self.output_shape is not None and any(self.pads):
            set_(self, "pads", (0,) * (2 * rank))  # ONNX: "If output_shape is specified pads values are ignored"
        if self.name is not None and not isinstance(self.name, str):
            raise SpecError(f"name must be a string, got {self.name!r}")
        if self.name == "":
            raise SpecError("name must not be empty; leave it out for the automatic label")
        if self.expect not in EXPECTATIONS:
            raise SpecError(f"expect must be 'accept' or 'reject', got {self.expect!r}")
        _check_bool(self.bias, "bias")
        _check_bool(self.weights_as_inputs, "weights_as_inputs")

    # ----- derived shapes ---------------------------------------------------------------
    @property
    def rank(self) -> int:
        return len(self.input_shape) - 2

    @property
    def batch(self) -> int:
        return self.input_shape[0]

    @property
    def in_channels(self) -> int:
        return self.input_shape[1]

    @property
    def in_spatial(self) -> tuple[int, ...]:
        return self.input_shape[2:]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """ONNX W layout: [C, M/group, *kernel]."""
        return (self.in_channels, self.out_channels // self.group, *self.kernel_shape)

    @property
    def natural_spatial(self) -> tuple[int, ...]:
        """Output size before padding: stride*(in-1) + output_padding + kernel extent."""
        return natural_size(self.in_spatial, self.kernel_shape, self.strides, self.dilations, self.output_padding)

    def resolved_pads(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(begin, end) pads the spec text implies; negative values mean zero extension."""
        return resolve_pads(
            self.in_spatial,
            self.kernel_shape,
            self.strides,
            self.dilations,
            self.output_padding,
            self.pads,
            self.auto_pad,
            self.output_shape,
        )

    @property
    def output_spatial(self) -> tuple[int, ...]:
        begin, end = self.resolved_pads()
        return tuple(n - b - e for n, b, e in zip(self.natural_spatial, begin, end))

    @property
    def output_full_shape(self) -> tuple[int, ...]:
        """[N, M, *spatial] as the spec text defines it."""
        return (self.batch, self.out_channels, *self.output_spatial)

    @property
    def total_padding(self) -> tuple[int, ...]:
        begin, end = self.resolved_pads()
        return tuple(b + e for b, e in zip(begin, end))

    # ----- validation -------------------------------------------------------------------
    def violations(self) -> list[str]:
        """Every ONNX ConvTranspose rule this config breaks, one readable line each."""
        found: list[str] = []
        if self.in_channels % self.group:
            found.append(f"group={self.group} does not divide in_channels={self.in_channels}")
        if self.out_channels % self.group:
            found.append(f"group={self.group} does not divide out_channels={self.out_channels}")
        for axis, (op, s, d) in enumerate(zip(self.output_padding, self.strides, self.dilations)):
            if op >= max(s, d):
                found.append(
                    f"output_padding[{axis}]={op} is not below max(stride={s}, dilation={d})={max(s, d)}"
                )
        if self.auto_pad != "NOTSET" and any(self.pads):
            found.append(f"pads {list(self.pads)} must not be set together with auto_pad={self.auto_pad}")
        for axis, size in enumerate(self.output_spatial):
            if size < 1:
                found.append(f"output size along spatial axis {axis} is {size}, below 1")
        return found

    @property
    def is_valid(self) -> bool:
        return not self.violations()

    # ----- identity ---------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """Every attribute that changes the computation, defaults filled in; the id hashes this."""
        return {
            "input_shape": list(self.input_shape),
            "out_channels": self.out_channels,
            "kernel_shape": list(self.kernel_shape),
            "strides": list(self.strides),
            "pads": list(self.pads),
            "output_padding": list(self.output_padding),
            "dilations": list(self.dilations),
            "group": self.group,
            "auto_pad": self.auto_pad,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "bias": self.bias,
            "dtype": self.dtype,
            "opset": self.opset,
            "weights_as_inputs": self.weights_as_inputs,
        }

    @property
    def id(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """Readable name, e.g. `2d-k3s2p1-op1-d1-g1-f32`; a user-given `name` wins."""
        if self.name:
            return self.name

        def compact(values: Iterable[int]) -> str:
            values = list(values)
            return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))

        if self.output_shape is not None:
            padding = f"os{compact(self.output_shape)}"
        elif self.auto_pad == "SAME_UPPER":
            padding = "su"
        elif self.auto_pad == "SAME_LOWER":
            padding = "sl"
        elif self.auto_pad == "VALID":
            padding = "v"
        else:
            padding = f"p{compact(self.pads)}"
        parts = [
            f"{self.rank}d",
            f"k{compact(self.kernel_shape)}s{compact(self.strides)}{padding}",
            f"op{compact(self.output_padding)}",
            f"d{compact(self.dilations)}",
            f"g{self.group}",
            DTYPE_SHORT[self.dtype],
        ]
        if not self.bias:
            parts.append("nb")
        if self.weights_as_inputs:
            parts.append("wi")
        if self.opset != DEFAULT_OPSET:
            parts.append(f"o{self.opset}")
        return "-".join(parts)

    @property
    def macs(self) -> int:
        """Multiply-adds a direct GEMM + col2im computes, cropped taps included."""
        per_input = (self.out_channels // self.group) * math.prod(self.kernel_shape)
        return math.prod(self.input_shape) * per_input

    @property
    def flops(self) -> int:
        """2 x MACs, the convention trtexec and papers use (bias additions are not counted)."""
        return 2 * self.macs

    @property
    def products_per_output(self) -> int:
        """Upper bound on the products summed into one output element (the K of gamma_K)."""
        return (self.in_channels // max(self.group, 1)) * math.prod(self.kernel_shape)

    # ----- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = self.canonical()
        data["expect"] = self.expect
        data["name"] = self.name
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConvTransposeSpec":
        """Build from ONNX attribute names; unknown keys are a usage error, not silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise SpecError(
                f"unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
            )
        for required in ("input_shape", "out_channels", "kernel_shape"):
            if data.get(required) is None:
                raise SpecError(f"{required} is required")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "ConvTransposeSpec":
        return dataclasses.replace(self, **changes)
