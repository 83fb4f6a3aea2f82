"""Conformance matrices: YAML -> list of specs.

A matrix has `defaults:` (merged into every config), `axes:` (expanded as all pairs with
allpairspy, or the full product with `expand: product`; axes named in `cross:` are crossed in full
and the others paired within each combination) and explicit `cases:`.  Keys are ONNX
attribute names plus input_shape, out_channels, bias, dtype, opset, weights_as_inputs, expect
and name.  An axis value that is a mapping sets several keys together (e.g. a rank-consistent
input_shape + kernel_shape).  Scalars broadcast over the spatial axes (`strides: 2`).

The top level is checked by a schema, values by type (`ConvTransposeSpec` refuses `group: true` or
`bias: "false"`), and every config gets a unique label; an error is one line naming file, row and key.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from deploykit.errors import UsageError
from deploykit.op.spec import BFLOAT16_MIN_OPSET, DEFAULT_OPSET, DTYPE_SHORT, DTYPES, ConvTransposeSpec, SpecError
from deploykit.paths import MATRICES_DIR
from deploykit.schema import validated
from deploykit.yamlfile import read_yaml


class MatrixFile(BaseModel):
    """A matrix file's top level; the keys and values inside a config are ConvTransposeSpec's to check."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = None
    description: str | None = None
    defaults: dict[Any, Any] = {}
    axes: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    expand: Literal["pairwise", "product"] = "pairwise"
    cross: list[str] = []
    cases: list[dict[Any, Any]] = []

    @field_validator("cross")
    @classmethod
    def _cross_names_axes(cls, cross: list[str], info: ValidationInfo) -> list[str]:
        axes = info.data.get("axes", cross)  # absent when axes: itself is wrong, which is reported already
        for key in cross:
            if key not in axes:
                raise ValueError(f"{key!r} is not an axis; axes: {', '.join(axes) or 'none'}")
        return cross


@dataclass
class Matrix:
    name: str
    path: Path
    specs: list[ConvTransposeSpec]


@dataclass(frozen=True)
class _Entry:
    """One config as written (an axes row or a case), with where it came from for error messages."""

    file: str
    row: str  # "case 3 (my-layer)", "axes row {...}"; " as float16" when --dtypes re-targets it
    source: int  # index of the row before --dtypes re-targeting (one row may give several dtypes)
    config: dict[str, Any]

    @property
    def where(self) -> str:
        return f"matrix {self.file}, {self.row}"

    @property
    def named(self) -> bool:
        return self.config.get("name") is not None


def builtin_names() -> list[str]:
    return sorted(p.stem for p in MATRICES_DIR.glob("*.yaml"))


def resolve_path(name_or_path: str) -> Path:
    """A built-in matrix name (`smoke`, `default`) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if candidate.is_dir():
            raise UsageError(f"matrix {name_or_path} is a directory, not a matrix file")
        if not candidate.exists():
            raise UsageError(f"matrix file {name_or_path} does not exist")
        if not candidate.is_file():  # a FIFO or device would block or never end: refuse it unread
            raise UsageError(f"matrix {name_or_path} is not a regular file")
        return candidate
    builtin = MATRICES_DIR / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    raise UsageError(
        f"unknown matrix {name_or_path!r}; built-in matrices: {', '.join(builtin_names())}, or give a .yaml path"
    )


def _read(path: Path) -> MatrixFile:
    """The file's top level, checked; unreadable, non-UTF-8 or malformed files are usage errors."""
    data = read_yaml(path, "matrix")
    if data is None:
        raise UsageError(f"matrix {path} is empty: it holds no configs")
    if isinstance(data, dict):  # an empty value (`axes:` and nothing after it) is YAML null: not given
        data = {key: value for key, value in data.items() if value is not None}
    return validated(MatrixFile, data, f"matrix {path.name}")


def _with_dtype_opset(entry: dict[str, Any]) -> dict[str, Any]:
    """bfloat16 exists for ConvTranspose only from opset 22: raise the default opset for it."""
    if entry.get("dtype") == "bfloat16" and "opset" not in entry:
        entry = {**entry, "opset": BFLOAT16_MIN_OPSET}
    return entry


def _retarget(entry: _Entry, dtype: str) -> _Entry:
    """The same config in another dtype (--dtypes); bfloat16 raises the opset to 22 if lower."""
    config = {**entry.config, "dtype": dtype}
    opset = config.get("opset", DEFAULT_OPSET)
    if dtype == "bfloat16" and type(opset) is int and opset < BFLOAT16_MIN_OPSET:  # `true` is no opset: the spec says so
        config["opset"] = BFLOAT16_MIN_OPSET
    return _Entry(entry.file, f"{entry.row} as {dtype}", entry.source, config)


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


def _axis_value(key: str, value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {key: value}


def _build(entry: _Entry) -> ConvTransposeSpec:
    try:
        return ConvTransposeSpec.from_dict(_with_dtype_opset(entry.config))
    except (SpecError, TypeError) as error:
        raise UsageError(f"{entry.where}: {error}") from None


def _axes_rows(axes: dict[str, list[Any]], expand: str, base: _Entry, tried: list[int]) -> list[_Entry]:
    """Expand `axes` over `base`, skipping rows that break an ONNX rule (a typo is still an error).

    `tried` counts the whole rows judged across the matrix: pairing axes whose values rarely fit
    together makes allpairspy try rows without end, so past MAX_AXES_ROWS tries it is refused."""
    keys = list(axes)
    values = [list(axes[k]) for k in keys]

    def entry(row: list[Any]) -> _Entry:
        described = ", ".join(filter(None, [base.row, *(f"{k!r}: {v!r}" for k, v in zip(keys, row))]))
        config = _merge(base.config, *(_axis_value(k, v) for k, v in zip(keys, row)))
        return _Entry(base.file, f"axes row {{{described}}}", base.source, config)

    def usable(row: list[Any]) -> bool:
        if len(row) < len(keys):
            return True  # allpairspy asks about partial rows; only whole rows can be judged
        tried[0] += 1
        if tried[0] > MAX_AXES_ROWS:
            raise UsageError(f"matrix {base.file}: expanding its axes tried {MAX_AXES_ROWS:,} rows, most of which break an"
                             " ONNX rule; give fewer values, or values that fit together (a mapping value sets several keys)")
        return _build(entry(row)).is_valid

    if expand == "product":
        rows = [list(r) for r in itertools.product(*values) if usable(list(r))]
    elif len(keys) == 1:
        rows = [[v] for v in values[0] if usable([v])]
    else:
        from allpairspy import AllPairs

        rows = [list(r) for r in AllPairs(values, filter_func=usable)]
    return [entry(r) for r in rows]


#: The most axes rows a matrix may ask for, and the most whole rows its expansion may try (rows that
#: break an ONNX rule are tried, then dropped): far above the built-in matrices (the default one
#: tries 2,806 rows for its 448 configs), and what keeps a few lines of `expand: product` over long
#: axes, or pairwise axes whose values rarely fit together, from expanding for hours.
MAX_AXES_ROWS = 100_000


def _check_axes_rows(data: MatrixFile, file: str) -> None:
    """Refuse, before expanding, axes that ask for more than MAX_AXES_ROWS rows.  Pairwise rows are
    counted as their least possible number, the product of the two longest axes."""
    inner = sorted((len(v) for k, v in data.axes.items() if k not in data.cross), reverse=True)
    per_combination = math.prod(inner) if data.expand == "product" else math.prod(inner[:2])
    rows = math.prod(len(data.axes[k]) for k in data.cross) * per_combination
    if rows > MAX_AXES_ROWS:
        raise UsageError(f"matrix {file}: its axes ask for {rows:,} rows, more than the {MAX_AXES_ROWS:,} one matrix may hold;"
                         " use fewer values, fewer cross: axes, or expand: pairwise")


def _axes_entries(data: MatrixFile, file: str) -> list[_Entry]:
    """`cross:` axes go as a full product; the other axes are expanded per combination."""
    axes, cross = data.axes, data.cross
    if not axes:
        return []
    _check_axes_rows(data, file)
    inner = {k: v for k, v in axes.items() if k not in cross}
    entries: list[_Entry] = []
    tried = [0]
    for fixed in itertools.product(*(axes[k] for k in cross)):
        described = ", ".join(f"{k!r}: {v!r}" for k, v in zip(cross, fixed))
        config = _merge(data.defaults, *(_axis_value(k, v) for k, v in zip(cross, fixed)))
        base = _Entry(file, described, 0, config)
        whole = [_Entry(file, f"axes row {{{described}}}", 0, config)]
        rows = _axes_rows(inner, data.expand, base, tried) if inner else whole
        entries.extend(rows)
    if not entries:
        raise UsageError(f"matrix {file}: every axes row breaks an ONNX rule, so axes: adds no config")
    return entries


def _case_entries(data: MatrixFile, file: str) -> list[_Entry]:
    entries = []
    for index, case in enumerate(data.cases):
        row = f"case {index}" + (f" ({case['name']})" if case.get("name") is not None else "")
        entries.append(_Entry(file, row, 0, _merge(data.defaults, case)))
    return entries


def _checked_specs(entries: list[_Entry]) -> list[tuple[_Entry, ConvTransposeSpec]]:
    """Build each config once: an invalid one must say `expect: reject`; one config, one name."""
    first: dict[tuple[str, str], tuple[_Entry, ConvTransposeSpec]] = {}
    for entry in entries:
        spec = _build(entry)
        problems = spec.violations()
        if problems and spec.expect != "reject":
            raise UsageError(
                f"{entry.where}: invalid config ({'; '.join(problems)}); mark it `expect: reject` to keep it as a negative case"
            )
        if not problems and spec.expect == "reject":
            raise UsageError(f"{entry.where}: marked `expect: reject` but the config is valid")
        earlier = first.setdefault((spec.id, spec.expect), (entry, spec))
        if earlier[1].name != spec.name:
            raise UsageError(
                f"{entry.where}: the same config as {earlier[0].row} under another name; it runs once, so keep one"
            )
    return list(first.values())


def _disambiguate(label: str, members: list[tuple[_Entry, ConvTransposeSpec]]) -> list[ConvTransposeSpec]:
    """Labels shared by several configs: a repeated user name is an error; otherwise add what differs.

    Auto labels leave out the input shape and out_channels, so configs that differ only there get
    `-1x8x5x5to4` ([N, C, *spatial] to M); one named case re-targeted by --dtypes gets `-f16`.
    """
    if any(entry.named for entry, _ in members) and len({entry.source for entry, _ in members}) > 1:
        first = members[0][0]
        second = next(entry for entry, _ in members if entry.source != first.source)
        kind = "name" if second.named else "label"
        raise UsageError(f"{second.where}: {kind} {label!r} is already used by {first.row} for a different config")
    specs = [spec for _, spec in members]
    suffix: dict[str, list[str]] = defaultdict(list)
    if len({(s.input_shape, s.out_channels) for s in specs}) > 1:
        for s in specs:
            suffix[s.id].append(f"{'x'.join(map(str, s.input_shape))}to{s.out_channels}")
    if any(entry.named for entry, _ in members) and len({s.dtype for s in specs}) > 1:
        for s in specs:
            suffix[s.id].append(DTYPE_SHORT[s.dtype])
    return [s.replace(name="-".join([label, *suffix[s.id]])) if suffix[s.id] else s for s in specs]


def _unique_labels(built: list[tuple[_Entry, ConvTransposeSpec]]) -> list[ConvTransposeSpec]:
    """Every config gets a label no other config of the matrix has (results are read by label)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, (_, spec) in enumerate(built):
        groups[spec.label].append(index)
    specs = [spec for _, spec in built]
    for label, indices in groups.items():
        if len(indices) > 1:
            for index, spec in zip(indices, _disambiguate(label, [built[i] for i in indices])):
                specs[index] = spec
    owner: dict[str, _Entry] = {}
    for (entry, _), spec in zip(built, specs):
        if spec.label in owner:
            raise UsageError(
                f"{entry.where}: label {spec.label!r} is also the label of {owner[spec.label].row}; give one a name"
            )
        owner[spec.label] = entry
    return specs


def load(name_or_path: str, dtypes: list[str] | None = None) -> Matrix:
    """Load and validate a matrix.  `dtypes` re-targets every config to each listed dtype."""
    path = resolve_path(name_or_path)
    data = _read(path)
    entries = _axes_entries(data, path.name) + _case_entries(data, path.name)
    if not entries:
        raise UsageError(f"matrix {path.name} holds no configs: give cases: or axes:")
    entries = [replace(entry, source=index) for index, entry in enumerate(entries)]
    if dtypes:
        for dtype in dtypes:
            if dtype not in DTYPES:
                raise UsageError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
        entries = [_retarget(entry, dtype) for entry in entries for dtype in dtypes]
    specs = _unique_labels(_checked_specs(entries))
    return Matrix(name=data.name or path.stem, path=path, specs=specs)
