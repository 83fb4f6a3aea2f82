"""A JSON report read back as a side of `conformance compare`, checked against a schema first.

The report `conformance report --format json` writes is a contract (see deploykit.report.records);
a file that breaks it (a hand edit, another tool, a truncated copy) must be a usage error naming
the key, never a TypeError half-way through the comparison, and never exit 1, which would claim a
regression.  Every key a record or the run may carry is typed as deploykit writes it (strictly: the
string "1.5" is no number, `true` is no run id); records from before a key existed lack it, and
keys deploykit does not read are ignored.  The record schema is made from `Result`'s own fields,
so the two never drift apart.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import ConfigDict, Field, with_config
from typing_extensions import NotRequired, Required, TypedDict

from deploykit.errors import UsageError
from deploykit.results.result import Result
from deploykit.schema import known_name, validated
from deploykit.vocabulary import VERDICTS

STRICT = ConfigDict(strict=True, extra="ignore")
#: how many bad keys one error line names before "and N more"
SHOWN_ERRORS = 3


@with_config(STRICT)
class ReportRun(TypedDict, total=False):
    """The `run` object: what compare reads from it (the rest is kept as written)."""

    run_id: int
    matrix: str
    status: str
    complete: bool
    planned: int
    recorded: int
    shard: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] | None
    environment: dict[str, Any]
    kind: str


@cache
def record_schema() -> type:
    """A TypedDict of Result's fields: required where Result has no default, typed as Result types them."""
    hints = get_type_hints(Result)
    keys: dict[str, Any] = {}
    for field in fields(Result):
        kind = hints[field.name]
        if field.name == "verdict":
            kind = Annotated[str, known_name("verdict", VERDICTS)]
        elif field.name == "expect":
            kind = Literal["accept", "reject"]
        required = field.default is MISSING and field.default_factory is MISSING
        keys[field.name] = Required[kind] if required else NotRequired[kind]
    return with_config(STRICT)(TypedDict("ReportRecord", keys))  # type: ignore[operator]  # keys known at run time only


@cache
def report_schema() -> type:
    @with_config(STRICT)
    class ReportFile(TypedDict):
        run: NotRequired[ReportRun | None]
        results: list[record_schema()]  # type: ignore[valid-type]

    return ReportFile


def read_report(path: Path) -> tuple[dict, list[Result]]:
    """The run record and the results of a JSON report, or one UsageError line naming what is wrong."""
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is neither a results database nor a JSON report ({error})") from None
    except RecursionError:
        raise UsageError(f"{path} is not a deploykit JSON report (nested too deep to be one)") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise UsageError(f"{path} is not a deploykit JSON report (write one with `conformance report --format json`)")
    checked: dict[str, Any] = validated(report_schema(), data, f"JSON report {path}", most=SHOWN_ERRORS)
    names = {f.name for f in fields(Result)}
    results = [Result(**{k: v for k, v in record.items() if k in names}) for record in checked["results"]]
    _refuse_repeats(path, results)
    return data.get("run") or {}, results


def _refuse_repeats(path: Path, results: list[Result]) -> None:
    """A report holds each (config, expectation, backend, precision, dtype) once; a second record
    for one would silently replace the first in the comparison."""
    first: dict[tuple, int] = {}
    for index, result in enumerate(results):
        identity = (result.config_id, result.expect, result.backend, result.precision, result.dtype)
        if identity in first:
            raise UsageError(f"JSON report {path}: results[{index}] is a second record of {result.label} on"
                             f" {result.backend_label} (results[{first[identity]}] is the first)")
        first[identity] = index

