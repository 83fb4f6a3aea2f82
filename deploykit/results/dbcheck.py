"""A results database that is damaged is named as such, in one line, never read or written on.

A disk error, a copy cut short or a file edited by hand can leave a SQLite file whose header is
fine but whose pages or rows are not: SQLite then raises `DatabaseError` at whatever query first
touches the bad page, which may be mid-report or mid-run.  Every command opens its database
through `deploykit.results.store.Store`, which calls `check_intact` first (SQLite's `PRAGMA integrity_check`
reads every page, so a damaged page is found before anything is read from or appended to the
file), checks the layout its schema version promises (`check_layout`), and maps any damage SQLite
reports later (`guarded`) or any row that does not decode (`decoded`) to `DatabaseDamaged`: one
line naming the file, exit 2.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from pathlib import Path
from typing import Any, Callable, TypeVar

from deploykit.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])
NoneType = type(None)
#: SQLite's primary result codes that mean the file itself is bad: SQLITE_CORRUPT, SQLITE_NOTADB
DAMAGE_CODES = (11, 26)
#: Columns every schema version has had (version 1's layout); a table without them is not deploykit's.
REQUIRED_COLUMNS = {
    "runs": ("run_id", "started_at", "finished_at", "status", "matrix", "parameters", "environment", "planned"),
    "results": ("run_id", "config_id", "label", "backend", "dtype", "verdict", "reason", "expect", "spec", "recorded_at"),
}


class DatabaseDamaged(UsageError):
    """The file is a SQLite database whose pages or rows are damaged: restore it, do not write to it."""


def damaged(path: Path, detail: object) -> DatabaseDamaged:
    text = " ".join(str(detail).replace("*** in database main ***", "").split()) or type(detail).__name__
    return DatabaseDamaged(f"results database {path} is damaged ({text}); deploykit neither reads nor writes a damaged"
                           " database: restore it from a copy, or give another --db")


def is_damage(error: BaseException) -> bool:
    """Whether SQLite said the file is damaged (not full, locked or read-only)."""
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    return (code & 0xFF) in DAMAGE_CODES if code is not None else type(error) is sqlite3.DatabaseError


def check_intact(db: sqlite3.Connection, path: Path) -> None:
    """`PRAGMA integrity_check`: every page of every table and index is read, its structure checked,
    and the primary-key index checked against the rows (a damaged index would make `INSERT OR
    IGNORE` drop or duplicate results silently).  It reads the file once: 0.12 s for a 100 MB
    database of 105,400 results, `quick_check` (no index cross-check) 0.08 s, file in the page cache."""
    try:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check(3)").fetchall()]
    except sqlite3.DatabaseError as error:
        if is_damage(error):
            raise damaged(path, error) from None
        raise
    if problems != ["ok"]:
        raise damaged(path, "; ".join(map(str, problems)))


def check_layout(db: sqlite3.Connection, path: Path) -> None:
    """The tables hold the columns every deploykit schema has had; anything else is not our layout."""
    for table, required in REQUIRED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        missing = [column for column in required if column not in have]
        if missing:
            raise UsageError(f"{path} is not a deploykit results database (its {table} table has no column"
                             f" {', '.join(missing)}); give another --db")


def guarded(method: F) -> F:
    """A Store method whose SQLite errors are told in one line: damage as DatabaseDamaged, anything
    else while reading as a UsageError; a writer's other errors (a full disk) stay sqlite3 errors,
    which the run turns into a resumable stop."""

    @functools.wraps(method)
    def call(store, *args, **kwargs):
        try:
            return method(store, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            if is_damage(error):
                raise damaged(store.path, error) from None
            if not store.writable:
                raise UsageError(f"cannot read results database {store.path}: {error}") from None
            raise

    return call  # type: ignore[return-value]


def decoded(text: Any, path: Path, where: str, kind: type | tuple[type, ...] = (dict, list, NoneType)) -> Any:
    """A JSON column's value; text deploykit did not write (not JSON, the wrong kind) is damage."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError) as error:
        raise damaged(path, f"{where} is not JSON: {error}") from None
    if not isinstance(value, kind):
        raise damaged(path, f"{where} holds a {type(value).__name__}, not what deploykit writes")
    return value


def checked_text(values: dict[str, Any], names: tuple[str, ...], path: Path, where: str) -> None:
    """Columns deploykit always writes as text (ids, names, verdicts): another type is damage."""
    for name in names:
        if not isinstance(values.get(name), str):
            raise damaged(path, f"{where} has {name} = {values.get(name)!r}, not text")


def stored_spec(result: Any) -> Any:
    """The config a stored result (`deploykit.results.result.Result`) was run on; one that no deploykit
    could have written (a hand edit, damage) is named in one line, not a traceback where it is used."""
    from deploykit.op.spec import ConvTransposeSpec, SpecError

    try:
        return ConvTransposeSpec.from_dict(result.spec)
    except (SpecError, TypeError, ValueError, ArithmeticError) as error:
        raise UsageError(f"the stored result of {result.backend} on {result.label} holds a config deploykit cannot read"
                         f" ({error}); is the results database damaged?") from None


def checked_parameters(run: Any, path: Path, kind: str) -> None:
    """A run's stored parameters, before `--resume` builds the run again from them: typed as
    deploykit writes them (deploykit.resume_schema), or the database is named as damaged."""
    from deploykit.results.stored_schema import FuzzParameters, RunParameters
    from deploykit.schema import validated

    schema = FuzzParameters if kind == "fuzz" else RunParameters
    validated(schema, run.parameters, f"results database {path} is damaged: run {run.run_id}'s stored parameters", most=3)


@functools.cache
def _adapters() -> dict[str, Any]:
    from pydantic import TypeAdapter

    from deploykit.results.baseline import record_schema
    from deploykit.results.stored_schema import Environment

    return {"result": TypeAdapter(record_schema()), "environment": TypeAdapter(Environment)}


def checked_row(kind: str, values: dict[str, Any], path: Path, where: str) -> None:
    """A result row or a run's environment typed as deploykit writes it (the JSON report's schema,
    deploykit.results.baseline, for a result): a word where a number belongs is damage, named in one line,
    never a TypeError in whichever report first does arithmetic on it."""
    from pydantic import ValidationError

    try:
        _adapters()[kind].validate_python(values)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        key = ".".join(map(str, first["loc"])) or kind
        raise damaged(path, f"{where} has {key} = {first['input']!r}: {first['msg']}") from None
