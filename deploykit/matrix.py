"""Conformance matrices: YAML -> list of specs.

A matrix has `defaults:` (merged into every config), `axes:` (expanded as all pairs with
allpairspy, or the full product with `expand: product`; axes named in `cross:` are crossed in full
and the others paired within each combination) and explicit `cases:`.  Keys are ONNX
attribute names plus input_shape, out_channels, bias, dtype, opset, weights_as_inputs, expect
and name.  An axis value that is a mapping sets several keys together (e.g. a rank-consistent
input_shape + kernel_shape).  Scalars broadcast over the spatial axes (`strides: 2`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploykit.errors import UsageError
from deploykit.paths import MATRICES_DIR
from deploykit.spec import BFLOAT16_MIN_OPSET, DEFAULT_OPSET, DTYPES, ConvTransposeSpec, SpecError


@dataclass
class Matrix:
    name: str
    path: Path
    specs: list[ConvTransposeSpec]


def builtin_names() -> list[str]:
    return sorted(p.stem for p in MATRICES_DIR.glob("*.yaml"))


def resolve_path(name_or_path: str) -> Path:
    """A built-in matrix name (`smoke`, `default`) or a path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise UsageError(f"matrix file {name_or_path} does not exist")
        return candidate
    builtin = MATRICES_DIR / f"{name_or_path}.yaml"
    if builtin.is_file():
        return builtin
    raise UsageError(
        f"unknown matrix {name_or_path!r}; built-in matrices: {', '.join(builtin_names())}, or give a .yaml path"
    )


def _with_dtype_opset(entry: dict[str, Any]) -> dict[str, Any]:
    """bfloat16 exists for ConvTranspose only from opset 22: raise the default opset for it."""
    if entry.get("dtype") == "bfloat16" and "opset" not in entry:
        entry = {**entry, "opset": BFLOAT16_MIN_OPSET}
    return entry


def _retarget(entry: dict[str, Any], dtype: str) -> dict[str, Any]:
    """The same config in another dtype (--dtypes); bfloat16 raises the opset to 22 if lower."""
    retargeted = {**entry, "dtype": dtype}
    opset = retargeted.get("opset", DEFAULT_OPSET)
    if dtype == "bfloat16" and isinstance(opset, int) and opset < BFLOAT16_MIN_OPSET:
        retargeted["opset"] = BFLOAT16_MIN_OPSET
    return retargeted


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


def _axis_value(key: str, value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {key: value}


def _build(entry: dict[str, Any], where: str) -> ConvTransposeSpec:
    try:
        return ConvTransposeSpec.from_dict(_with_dtype_opset(entry))
    except (SpecError, TypeError) as error:
        raise UsageError(f"{where}: {error}") from None


def _axes_rows(axes: dict[str, list[Any]], expand: str, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    values = [list(axes[k]) for k in keys]

    def entry(row: list[Any]) -> dict[str, Any]:
        return _merge(defaults, *(_axis_value(k, v) for k, v in zip(keys, row)))

    def usable(row: list[Any]) -> bool:
        """Skip rows that break an ONNX rule; a row deploykit cannot even build is the user's typo."""
        if len(row) < len(keys):
            return True  # allpairspy asks about partial rows; only whole rows can be judged
        return _build(entry(row), f"axes row {dict(zip(keys, row))}").is_valid

    if expand == "product":
        rows = [list(r) for r in itertools.product(*values) if usable(list(r))]
    elif len(keys) == 1:
        rows = [[v] for v in values[0] if usable([v])]
    else:
        from allpairspy import AllPairs

        rows = [list(r) for r in AllPairs(values, filter_func=usable)]
    return [entry(r) for r in rows]


def load(name_or_path: str, dtypes: list[str] | None = None) -> Matrix:
    """Load and validate a matrix.  `dtypes` re-targets every config to each listed dtype."""
    path = resolve_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"matrix {path}: malformed YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"matrix {path}: expected a mapping with defaults/axes/cases at the top")
    unknown = set(data) - {"name", "description", "defaults", "axes", "expand", "cross", "cases"}
    if unknown:
        raise UsageError(f"matrix {path}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}")
    defaults = data.get("defaults") or {}
    axes = data.get("axes") or {}
    cases = data.get("cases") or []
    expand = data.get("expand", "pairwise")
    if expand not in ("pairwise", "product"):
        raise UsageError(f"matrix {path}: expand must be 'pairwise' or 'product', got {expand!r}")
    if not isinstance(defaults, dict) or not isinstance(axes, dict) or not isinstance(cases, list):
        raise UsageError(f"matrix {path}: defaults and axes must be mappings, cases a list")

    for key, options in axes.items():
        if not isinstance(options, list) or not options:
            raise UsageError(f"matrix {path}: axis {key!r} must be a non-empty list of values, got {options!r}")
    cross = data.get("cross") or []
    if not isinstance(cross, list) or any(not isinstance(key, str) or key not in axes for key in cross):
        raise UsageError(f"matrix {path}: cross must list axis names from axes:, got {cross!r}")

    entries: list[tuple[str, dict[str, Any]]] = []
    if axes:
        # `cross:` axes go as a full product; the other axes are expanded per combination.
        inner = {k: v for k, v in axes.items() if k not in cross}
        for fixed in itertools.product(*(axes[k] for k in cross)):
            base = _merge(defaults, *(_axis_value(k, v) for k, v in zip(cross, fixed)))
            rows = _axes_rows(inner, expand, base) if inner else [base]
            for row in rows:
                entries.append((f"matrix {path.name}, axes row {len(entries)}", row))
    for index, case in enumerate(cases):
        if not isinstance(case, dict):
            raise UsageError(f"matrix {path.name}, case {index}: expected a mapping, got {case!r}")
        label = f"matrix {path.name}, case {index}" + (f" ({case['name']})" if case.get("name") else "")
        entries.append((label, _merge(defaults, case)))

    if dtypes:
        for dtype in dtypes:
            if dtype not in DTYPES:
                raise UsageError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
        entries = [(where, _retarget(entry, dtype)) for where, entry in entries for dtype in dtypes]

    specs: list[ConvTransposeSpec] = []
    seen: set[tuple[str, str]] = set()
    for where, entry in entries:
        spec = _build(entry, where)
        problems = spec.violations()
        if problems and spec.expect != "reject":
            raise UsageError(
                f"{where}: invalid config ({'; '.join(problems)}); mark it `expect: reject` to keep it as a negative case"
            )
        if not problems and spec.expect == "reject":
            raise UsageError(f"{where}: marked `expect: reject` but the config is valid")
        key = (spec.id, spec.expect)
        if key not in seen:
            seen.add(key)
            specs.append(spec)
    return Matrix(name=str(data.get("name") or path.stem), path=path, specs=specs)
