"""Results in an embedded SQLite database, written as they arrive.

Each result is committed on its own (WAL journal), so a run killed even with SIGKILL loses at
most the task in flight, and `--resume` finishes it: the primary key (run, config, backend)
makes a re-inserted result impossible to duplicate.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

from deploykit.errors import UsageError
from deploykit.execute import Result

SCHEMA_VERSION = 1
_RESULT_FIELDS = [f.name for f in fields(Result)]
_JSON_FIELDS = {"expected_shape", "actual_shape", "onnx_inferred_shape", "spec"}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,          -- running | complete
    matrix TEXT NOT NULL,
    parameters TEXT NOT NULL,      -- JSON: backends, dtypes, tolerance, latency, ...
    environment TEXT NOT NULL,     -- JSON: versions, CPU/GPU
    planned INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    {", ".join(f"{name} {'TEXT' if name in _JSON_FIELDS else ''}".strip() for name in _RESULT_FIELDS)},
    recorded_at REAL NOT NULL,
    PRIMARY KEY (run_id, config_id, expect, backend)
);
"""


@dataclass
class Run:
    run_id: int
    started_at: float
    finished_at: float | None
    status: str
    matrix: str
    parameters: dict[str, Any]
    environment: dict[str, Any]
    planned: int


class Store:
    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        """`create=False` opens an existing database read-only (reports and lint never write)."""
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise UsageError(f"results database {self.path} does not exist; run `deploykit conformance run --db {self.path}` first")
        try:
            if create:
                self.db = sqlite3.connect(str(self.path), isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.executescript(_SCHEMA)
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            else:
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
            # A database with tables of the same names but another layout is not ours.
            self.db.execute(f"SELECT run_id, status, matrix, parameters, environment, planned FROM runs LIMIT 0")
            self.db.execute(f"SELECT run_id, {', '.join(_RESULT_FIELDS)}, recorded_at FROM results LIMIT 0")
        except sqlite3.Error as error:
            raise UsageError(f"{self.path} is not a deploykit results database ({error})") from None

    def close(self) -> None:
        self.db.close()

    # ----- runs ------------------------------------------------------------------------------
    def start_run(self, matrix: str, parameters: dict, environment: dict, planned: int) -> int:
        cursor = self.db.execute(
            "INSERT INTO runs (started_at, status, matrix, parameters, environment, planned) VALUES (?, 'running', ?, ?, ?, ?)",
            (time.time(), matrix, json.dumps(parameters), json.dumps(environment), planned),
        )
        return int(cursor.lastrowid)

    def finish_run(self, run_id: int) -> None:
        self.db.execute("UPDATE runs SET status='complete', finished_at=? WHERE run_id=?", (time.time(), run_id))

    def _run_from_row(self, row: tuple) -> Run:
        run_id, started, finished, status, matrix, parameters, environment, planned = row
        return Run(run_id, started, finished, status, matrix, json.loads(parameters), json.loads(environment), planned)

    def runs(self) -> list[Run]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        return [self._run_from_row(r) for r in rows]

    def latest_run(self, unfinished_only: bool = False) -> Run | None:
        query = "SELECT * FROM runs" + (" WHERE status != 'complete'" if unfinished_only else "") + " ORDER BY run_id DESC LIMIT 1"
        row = self.db.execute(query).fetchone()
        return self._run_from_row(row) if row else None

    # ----- results ---------------------------------------------------------------------------
    def add(self, run_id: int, result: Result) -> None:
        data = result.as_dict()
        values = [json.dumps(data[n]) if n in _JSON_FIELDS else data[n] for n in _RESULT_FIELDS]
        placeholders = ", ".join("?" * (len(_RESULT_FIELDS) + 2))
        self.db.execute(
            f"INSERT OR IGNORE INTO results (run_id, {', '.join(_RESULT_FIELDS)}, recorded_at) VALUES ({placeholders})",
            [run_id, *values, time.time()],
        )

    def done(self, run_id: int) -> set[tuple[str, str, str]]:
        rows = self.db.execute("SELECT config_id, expect, backend FROM results WHERE run_id=?", (run_id,))
        return {tuple(r) for r in rows}

    def results(self, run_id: int) -> list[Result]:
        return list(self._iter_results(run_id))

    def _iter_results(self, run_id: int) -> Iterator[Result]:
        cursor = self.db.execute(
            f"SELECT {', '.join(_RESULT_FIELDS)} FROM results WHERE run_id=? ORDER BY recorded_at", (run_id,)
        )
        for row in cursor:
            data = {n: (json.loads(v) if n in _JSON_FIELDS and v is not None else v) for n, v in zip(_RESULT_FIELDS, row)}
            yield Result(**data)
