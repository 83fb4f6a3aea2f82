"""Results in an embedded SQLite database, written as they arrive.

Each result is committed on its own (WAL journal while a run writes), so a run killed even with
SIGKILL loses at most the tasks in flight, and `--resume` finishes it: the primary key (run, config,
backend) makes a re-inserted result impossible to duplicate.  Closing checkpoints and returns the
file to a rollback journal, so a finished database is one self-contained file that reads anywhere,
a read-only folder included.

A file that is not a deploykit database is refused before anything is written to it, and the
schema version is read: an older database is migrated (columns are only ever added), a newer one
is refused with the version it has.  A damaged one (a bad page, rows deploykit did not write) is
refused in one line whenever the damage shows, at open or mid-run (`deploykit.results.dbcheck`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterator

from deploykit.errors import RunAborted, UsageError
from deploykit.results import dbcheck
from deploykit.results.dbcheck import checked_text, decoded, guarded
from deploykit.results.result import Result, Run  # Run is also read from here, beside Store

#: 1: the first layout.  2: runs.owner; results.accumulation and results.float32_sum_ratio.
#: 3: results.precision, part of the primary key (a result is per build precision).
#: 4: runs.known_divergences, the table a run was judged with (reports of old runs never change).
#: 5: results.latency_gpu_median_ms and latency_gpu_p99_ms (GPU compute time beside host latency).
SCHEMA_VERSION = 5
_RESULT_FIELDS = [f.name for f in fields(Result)]
_JSON_FIELDS = {"expected_shape", "actual_shape", "onnx_inferred_shape", "spec"}
_RUN_COLUMNS = ("run_id", "started_at", "finished_at", "status", "matrix", "parameters", "environment", "planned", "owner",
                "known_divergences")
#: The precision results from before schema 3 were built at: the one their run was started with.
#: The migration writes it, and a report of an unmigrated database reads it, with this one rule.
_RUN_PRECISION = ("COALESCE((SELECT json_extract(parameters, '$.precision') FROM runs WHERE runs.run_id = {table}.run_id),"
                  " 'fp32')")
_SQLITE_MAGIC = b"SQLite format 3\x00"

_RESULTS_TABLE = f"""
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    {", ".join(f"{name} {'TEXT' if name in _JSON_FIELDS else ''}".strip() for name in _RESULT_FIELDS)},
    recorded_at REAL NOT NULL,
    PRIMARY KEY (run_id, config_id, expect, backend, precision)
);
"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,          -- running | complete
    matrix TEXT NOT NULL,
    parameters TEXT NOT NULL,      -- JSON: backends, dtypes, tolerance, latency, matrix hash, ...
    environment TEXT NOT NULL,     -- JSON: versions, CPU/GPU
    planned INTEGER NOT NULL,
    owner TEXT,                    -- JSON: host, pid, process start time (see deploykit.execution.liveness)
    known_divergences TEXT         -- JSON: the known-divergence table the run was judged with
);
{_RESULTS_TABLE}"""


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _schema_version(db: sqlite3.Connection, path: Path) -> int | None:
    """The deploykit schema version of a database, None for an empty one; refuses anything else."""
    tables = _tables(db)
    if not tables:
        return None
    if not {"meta", "runs", "results"} <= tables:
        found = ", ".join(sorted(tables)[:5])
        raise UsageError(f"{path} is not a deploykit results database (it has tables {found}); give another --db")
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None or not str(row[0]).isdigit():
        raise UsageError(f"{path} is not a deploykit results database (no schema version); give another --db")
    version = int(row[0])
    if version > SCHEMA_VERSION:
        raise UsageError(
            f"{path} has results schema version {version}, newer than this deploykit's {SCHEMA_VERSION}; upgrade deploykit to read it"
        )
    return version


def _is_sqlite_file(path: Path) -> bool:
    """Whether the file starts as SQLite writes it: then an error reading it means damage."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def _check_usable(db: sqlite3.Connection, path: Path, version: int | None) -> None:
    """A deploykit database's layout and every page checked, before anything reads or writes it."""
    if version is not None:
        dbcheck.check_layout(db, path)
        dbcheck.check_intact(db, path)


def _readonly_uri(path: Path, immutable: bool = False) -> str:
    return f"{path.resolve().as_uri()}?{'immutable=1' if immutable else 'mode=ro'}"


def _check_writable_path(path: Path) -> None:
    """Accurate one-line reasons before SQLite's generic 'unable to open database file'."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--db {path}: folder {parent} does not exist; create it or choose another path")
    if path.is_dir():
        raise UsageError(f"--db {path} is a directory; give a database file path")
    if path.exists() and not path.is_file():
        raise UsageError(f"--db {path} is not a regular file")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"results database {path} is read-only; `conformance report` reads it, a run needs a writable --db")
    if path.exists() and not os.access(parent, os.W_OK):  # SQLite's journal goes beside the database
        raise UsageError(f"--db {path}: folder {parent} is read-only, and a run writes a journal beside the database;"
                         " make the folder writable or copy the database elsewhere")
    if not path.exists() and not os.access(parent, os.W_OK):
        raise UsageError(f"--db {path}: cannot create a file in folder {parent} (permission denied)")


def _storable(value: Any) -> Any:
    """SQLite stores UTF-8: a lone surrogate (Python's stand-in for an undecodable byte, e.g. a file
    name in a runtime's error message) is written out as `\\udcff` rather than failing the run."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


class Store:
    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        """`create=False` opens an existing database read-only (reports and lint never write).

        Writing opens a database only after checking, read-only, that it is empty or deploykit's.
        """
        self.path = Path(path)
        self.writable = create
        try:
            self.db = self._open_for_writing() if create else self._open_read_only()
        except sqlite3.Error as error:
            raise self._refused(error) from None
        self._result_columns = _columns(self.db, "results")
        self._run_columns = _columns(self.db, "runs")

    def _refused(self, error: sqlite3.Error) -> Exception:
        """Why the database could not be opened, in one line: damaged, the disk, or not deploykit's."""
        if dbcheck.is_damage(error) and _is_sqlite_file(self.path):
            return dbcheck.damaged(self.path, error)
        if self.writable and isinstance(error, sqlite3.OperationalError):  # the paths were checked: the disk (full, I/O)
            return RunAborted(f"cannot write to results database {self.path}: {error}", resumable=False)
        return UsageError(f"{self.path} is not a deploykit results database ({error})")

    def _open_read_only(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise UsageError(f"results database {self.path} is a directory; give the database file")
        if not self.path.is_file():
            raise UsageError(
                f"results database {self.path} does not exist; run `deploykit conformance run --db {self.path}` first"
            )
        db = sqlite3.connect(_readonly_uri(self.path), uri=True, isolation_level=None)
        try:
            version = _schema_version(db, self.path)
        except sqlite3.OperationalError:
            # A database left in WAL mode (a killed run) needs a -shm file, which a read-only folder
            # cannot take: read the file as it is instead.
            db.close()
            db = sqlite3.connect(_readonly_uri(self.path, immutable=True), uri=True, isolation_level=None)
            version = _schema_version(db, self.path)
        _check_usable(db, self.path, version)
        if version is None:  # an empty file (or an empty SQLite database) holds no runs to read
            db.close()
            raise UsageError(f"results database {self.path} is empty; run `deploykit conformance run --db {self.path}` first")
        return db

    def _open_for_writing(self) -> sqlite3.Connection:
        _check_writable_path(self.path)
        if self.path.exists() and self.path.stat().st_size > 0:
            probe = sqlite3.connect(_readonly_uri(self.path), uri=True, isolation_level=None)
            try:
                version = _schema_version(probe, self.path)  # refuses another program's file untouched
                _check_usable(probe, self.path, version)
                if version is not None:
                    self._check_run_rows(probe)
            except sqlite3.DatabaseError as error:
                if dbcheck.is_damage(error) and _is_sqlite_file(self.path):
                    raise dbcheck.damaged(self.path, error) from None
                raise UsageError(f"{self.path} is not a deploykit results database ({error}); give another --db") from None
            finally:
                probe.close()
        db = sqlite3.connect(str(self.path), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
        self._migrate(db)
        return db

    def _check_run_rows(self, db: sqlite3.Connection) -> None:
        """Every run's row decodes, so a writer adds nothing to a database whose runs it could not
        report (one row per run: cheap).  Results rows are checked as a report reads them."""
        self.db, self._run_columns = db, _columns(db, "runs")
        self._select_runs()

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Bring an older layout up to SCHEMA_VERSION, in one transaction: columns are added, and
        version 3's wider primary key rebuilds the results table with every row kept."""
        db.execute("BEGIN IMMEDIATE")
        try:
            if "precision" not in _columns(db, "results"):
                self._rebuild_results(db)
            have = _columns(db, "results")
            for name in _RESULT_FIELDS:
                if name not in have:
                    db.execute(f"ALTER TABLE results ADD COLUMN {name} {'TEXT' if name in _JSON_FIELDS else ''}".strip())
            for column in ("owner", "known_divergences"):
                if column not in _columns(db, "runs"):
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _rebuild_results(db: sqlite3.Connection) -> None:
        """Results from before schema 3 get the precision their run was started with."""
        old = _columns(db, "results")
        kept = [name for name in ["run_id", *_RESULT_FIELDS, "recorded_at"] if name in old]
        db.execute("ALTER TABLE results RENAME TO results_before_v3")
        db.execute(_RESULTS_TABLE)
        precision = _RUN_PRECISION.format(table="old")
        db.execute(
            f"INSERT INTO results ({', '.join(kept)}, precision) SELECT {', '.join(f'old.{k}' for k in kept)}, {precision}"
            " FROM results_before_v3 AS old"
        )
        db.execute("DROP TABLE results_before_v3")

    def close(self) -> None:
        """Leave one self-contained file: fold the WAL back and return to a rollback journal."""
        if self.writable:
            try:
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self.db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:
                pass  # another connection still writes (it will do the same), or the disk is full
        self.db.close()

    # ----- runs ------------------------------------------------------------------------------
    @guarded
    def start_run(self, matrix: str, parameters: dict, environment: dict, planned: int, owner: dict | None = None,
                  known_divergences: list[dict] | None = None) -> int:
        cursor = self.db.execute(
            "INSERT INTO runs (started_at, status, matrix, parameters, environment, planned, owner, known_divergences)"
            " VALUES (?, 'running', ?, ?, ?, ?, ?, ?)",
            (time.time(), matrix, json.dumps(parameters), json.dumps(environment), planned, json.dumps(owner),
             json.dumps(known_divergences)),
        )
        assert cursor.lastrowid is not None, "an INSERT sets lastrowid"
        return int(cursor.lastrowid)

    @guarded
    def take_over(self, run_id: int, owner: dict) -> None:
        self.db.execute("UPDATE runs SET owner=? WHERE run_id=?", (json.dumps(owner), run_id))

    @guarded
    def finish_run(self, run_id: int, planned: int | None = None) -> None:
        """Mark a run complete; a run that could not know its size in advance (a fuzz run) gives it now."""
        self.db.execute("UPDATE runs SET status='complete', finished_at=?, planned=COALESCE(?, planned) WHERE run_id=?",
                        (time.time(), planned, run_id))

    def _select_runs(self, where: str = "", order: str = "ASC", limit: str = "") -> list[Run]:
        columns = ", ".join(c if c in self._run_columns else f"NULL AS {c}" for c in _RUN_COLUMNS)
        rows = self.db.execute(f"SELECT {columns} FROM runs {where} ORDER BY run_id {order} {limit}").fetchall()
        return [self._run(dict(zip(_RUN_COLUMNS, row))) for row in rows]

    def _run(self, row: dict[str, Any]) -> Run:
        """A runs row as deploykit wrote it; any other content is damage, named, never a traceback."""
        where = f"run {row['run_id']!r}"
        if not isinstance(row["run_id"], int):
            raise dbcheck.damaged(self.path, f"a run has id {row['run_id']!r}")
        checked_text(row, ("status", "matrix"), self.path, where)
        environment = decoded(row["environment"], self.path, f"{where}'s environment", dict)
        dbcheck.checked_row("environment", environment, self.path, f"{where}'s environment")
        return Run(row["run_id"], row["started_at"], row["finished_at"], row["status"], row["matrix"],
                   decoded(row["parameters"], self.path, f"{where}'s parameters", dict),
                   environment, row["planned"],
                   decoded(row["owner"], self.path, f"{where}'s owner", (dict, dbcheck.NoneType)) if row["owner"] else None,
                   decoded(row["known_divergences"], self.path, f"{where}'s divergence table", (list, dbcheck.NoneType))
                   if row["known_divergences"] else None)

    @guarded
    def runs(self) -> list[Run]:
        return self._select_runs()

    @guarded
    def run(self, run_id: int) -> Run | None:
        found = self._select_runs(f"WHERE run_id = {int(run_id)}")
        return found[0] if found else None

    def started_run(self, run_id: int) -> Run:
        """`run` for a run this process started or took over, which is in the database."""
        run = self.run(run_id)
        if run is None:
            raise LookupError(f"run {run_id} is not in {self.path}")
        return run

    @guarded
    def latest_run(self, unfinished_only: bool = False) -> Run | None:
        found = self._select_runs("WHERE status != 'complete'" if unfinished_only else "", "DESC", "LIMIT 1")
        return found[0] if found else None

    @guarded
    def last_activity(self, run: Run) -> float:
        """When the run last recorded a result (or started)."""
        row = self.db.execute("SELECT MAX(recorded_at) FROM results WHERE run_id=?", (run.run_id,)).fetchone()
        return max(run.started_at, row[0] or 0.0)

    # ----- results ---------------------------------------------------------------------------
    @guarded
    def add(self, run_id: int, result: Result) -> None:
        data = result.as_dict()
        values = [json.dumps(data[n]) if n in _JSON_FIELDS else _storable(data[n]) for n in _RESULT_FIELDS]
        placeholders = ", ".join("?" * (len(_RESULT_FIELDS) + 2))
        self.db.execute(
            f"INSERT OR IGNORE INTO results (run_id, {', '.join(_RESULT_FIELDS)}, recorded_at) VALUES ({placeholders})",
            [run_id, *values, time.time()],
        )

    @guarded
    def done(self, run_id: int) -> set[tuple[str, str, str, str]]:
        """Keys (config, expect, backend, precision) of the results a run has stored."""
        rows = self.db.execute("SELECT config_id, expect, backend, precision FROM results WHERE run_id=?", (run_id,))
        return {tuple(r) for r in rows}

    @guarded
    def results(self, run_id: int) -> list[Result]:
        return list(self._iter_results(run_id))

    def _iter_results(self, run_id: int) -> Iterator[Result]:
        # Columns a database from an older schema lacks read as None (reports never migrate), but
        # for the precision, which a result from before schema 3 takes from its run, as migrating does.
        columns = ", ".join(self._result_column(n) for n in _RESULT_FIELDS)
        cursor = self.db.execute(f"SELECT {columns} FROM results WHERE run_id=? ORDER BY recorded_at", (run_id,))
        for row in cursor:
            yield self._result(dict(zip(_RESULT_FIELDS, row)), run_id)

    def _result_column(self, name: str) -> str:
        if name in self._result_columns:
            return name
        return f"{_RUN_PRECISION.format(table='results')} AS {name}" if name == "precision" else f"NULL AS {name}"

    def _result(self, row: dict[str, Any], run_id: int) -> Result:
        """A results row as deploykit wrote it; any other content is damage, named, never a traceback."""
        where = f"a result of run {run_id}"
        for name in _JSON_FIELDS:
            if row[name] is not None:
                kind = dict if name == "spec" else (list, dbcheck.NoneType)
                row[name] = decoded(row[name], self.path, f"{where}'s {name}", kind)
        dbcheck.checked_row("result", row, self.path, where)
        return Result(**row)
