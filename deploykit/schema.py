"""Check a YAML document against a pydantic schema (kept beside the code that reads the file); a
mismatch is one UsageError line, `<where>: <key>: <problem>, got <value>`, in YAML's terms, not Python's."""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeVar

from pydantic import AfterValidator, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from deploykit.errors import UsageError

T = TypeVar("T")
#: pydantic error types whose own wording names Python types; the others read well as "must be ...".
_PROBLEMS = {
    "missing": "is required", "extra_forbidden": "unknown key", "unexpected_keyword_argument": "unknown key",
    "dict_type": "must be a mapping", "model_type": "must be a mapping", "dataclass_type": "must be a mapping",
    "list_type": "must be a list", "tuple_type": "must be a list", "string_type": "must be a string",
    "too_short": "must not be empty", "string_pattern_mismatch": "must not be blank",
}


def known_name(kind: str, names: Collection[str]) -> AfterValidator:
    """A name from `names`: a typo is an error listing the known ones, never a silent non-match."""

    def check(name: str) -> str:
        if name not in names:
            raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(names)}")
        return name

    return AfterValidator(check)


def validated(schema: type[T], data: object, where: str, most: int | None = None) -> T:
    """`data` as `schema`, or a UsageError naming `where` and every bad key (the first `most`), on one line."""
    try:
        return TypeAdapter(schema).validate_python(data)
    except ValidationError as error:
        details = error.errors(include_url=False)
    # A list whose items failed also fails "not empty after validation": name the items only.
    shown = [d for d in details if not any(o["loc"][: len(d["loc"])] == d["loc"] != o["loc"] for o in details)]
    text = "; ".join(map(_describe, shown[:most]))
    if most is not None and len(shown) > most:
        text += f"; and {len(shown) - most} more"
    if any(not d["loc"] or (_PROBLEMS.get(d["type"]) == "unknown key" and len(d["loc"]) == 1) for d in shown):  # top-level keys
        fields = getattr(schema, "model_fields", None) or getattr(schema, "__pydantic_fields__", None) or schema.__annotations__
        text += f"; known keys: {', '.join(fields)}"
    raise UsageError(f"{where}: {text}")


def _describe(detail: ErrorDetails) -> str:
    """`key: problem, got value`, the key as a path (`axes.strides`, `verdicts[1]`)."""
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in detail["loc"]).lstrip(".")
    problem = _PROBLEMS.get(detail["type"]) or detail["msg"].replace("Input should be", "must be")
    if detail["type"] == "value_error":
        problem = str(detail["ctx"]["error"])
    elif detail["type"] != "missing" and problem != "unknown key":
        problem += f", got {detail['input']!r}"
    return f"{key}: {problem}" if key else problem
