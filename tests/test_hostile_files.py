"""Hostile or broken files never give a traceback or a silent answer: a damaged or old results
database, YAML bombs, malformed JSON baselines, absurd shards, oversized repro configs, models
ONNX's own checker rejects.  Each error is one line on stderr and exit 2."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from deploykit.cli import main
from deploykit.dbcheck import DatabaseDamaged
from deploykit.store import SCHEMA_VERSION, Store

from test_cli import deploykit


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The command line in this process (fast): exit code, stdout, stderr."""
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----- damaged results databases --------------------------------------------------------------
@pytest.fixture(scope="module")
def results_db(tmp_path_factory) -> Path:
    """A real results database: the smoke matrix on the reference backend."""
    folder = tmp_path_factory.mktemp("db")
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "reference", "--db", "r.db", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder / "r.db"


def _pages(db: Path, table: str) -> list[int]:
    """The pages a table's b-tree occupies (SQLite's dbstat), root first."""
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute("SELECT pageno FROM dbstat WHERE name=? ORDER BY pageno", (table,))]


def _garbage_page(db: Path, page: int) -> None:
    size = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True).execute("PRAGMA page_size").fetchone()[0]
    with db.open("r+b") as handle:
        handle.seek(size * (page - 1))
        handle.write(bytes((7 * i + 3) % 256 for i in range(size)))


def _damage(db: Path, how: str) -> None:
    """Damage a copy of a real results database the ways disks, copies and hand edits do."""
    if how == "a results page":
        _garbage_page(db, _pages(db, "results")[-1])  # a leaf: the header and the schema are fine
    elif how == "the results root":
        _garbage_page(db, _pages(db, "results")[0])
    elif how == "truncated":
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])
    elif how == "junk rows":
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE runs SET parameters = '{\"backends\": [', environment = '7'")
        connection.close()
    elif how == "junk results":
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE results SET spec = '[1, 2]', verdict = 3")
        connection.close()
    elif how == "junk layout":
        with sqlite3.connect(db) as connection:
            connection.execute("ALTER TABLE results DROP COLUMN verdict")
        connection.close()


DAMAGE = ["a results page", "the results root", "truncated", "junk rows", "junk results", "junk layout"]
COMMANDS = {
    "report": "conformance report --db {db} --format json",
    "compare": "conformance compare --baseline {good} --db {db}",
    "repro": "repro --db {db} --config 1d-basic --backend reference -o {tmp}/bundle",
    "merge": "conformance merge {db} -o {tmp}/merged.db",
    "lint": "lint {tmp}/layer.onnx --db {db}",
    "run": "conformance run --matrix smoke --backends reference --db {db}",
    "fuzz": "conformance fuzz --backends reference --max-examples 2 --db {db}",
    "judge": "conformance judge {tmp}/tree --as reference --db {db}",
}
LAYER = "{name: layer, input_shape: [1, 2, 3, 3], out_channels: 2, kernel_shape: 2}"


def _damaged_copy(results_db: Path, tmp_path: Path, how: str) -> Path:
    db = tmp_path / "damaged.db"
    shutil.copy(results_db, db)
    _damage(db, how)
    return db


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """What the other commands read: a model for lint, an answered generate tree for judge."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "m.yaml").write_text(f"cases:\n  - {LAYER}\n")
    assert main(["generate", "--matrix", str(folder / "m.yaml"), "--out", str(folder / "tree")]) == 0
    [case] = (folder / "tree").glob("*/test_data_set_0")
    shutil.copy(case / "output_0.pb", case / "actual_0.pb")
    shutil.copy(case.parent / "model.onnx", folder / "layer.onnx")
    return folder


def _with_inputs(inputs: Path, tmp_path: Path) -> None:
    shutil.copytree(inputs / "tree", tmp_path / "tree")
    shutil.copy(inputs / "layer.onnx", tmp_path / "layer.onnx")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_names_a_damaged_page_in_one_line_and_writes_nothing(capsys, results_db, inputs, tmp_path, command):
    db = _damaged_copy(results_db, tmp_path, "a results page")
    _with_inputs(inputs, tmp_path)
    before = _digest(db)
    args = COMMANDS[command].format(db=db, good=results_db, tmp=tmp_path).split()
    code, _, err = cli(capsys, *args)
    one_line_error(code, err, str(db), "is damaged", "restore it from a copy")
    assert _digest(db) == before  # a writer never appends to a damaged database
    assert not (tmp_path / "merged.db").exists() and not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("how, command", [(how, "report") for how in DAMAGE] + [(how, "run") for how in DAMAGE if how != "junk results"])
def test_every_kind_of_damage_is_one_line(capsys, results_db, tmp_path, how, command):
    """A writer checks every page and every run's row: a new run in a file with junk results
    rows of an old run is allowed (their report is refused, the new run's reads fine)."""
    db = _damaged_copy(results_db, tmp_path, how)
    before = _digest(db)
    code, _, err = cli(capsys, *COMMANDS[command].format(db=db, good=results_db, tmp=tmp_path).split())
    line = one_line_error(code, err, str(db))
    assert ("is damaged" in line) if how != "junk layout" else ("has no column verdict" in line), line
    assert _digest(db) == before


def test_damage_that_shows_mid_run_is_named_for_readers_and_writers(results_db, tmp_path):
    """SQLite reports a bad page when a query first touches it, which can be long after the open:
    a store whose file is damaged behind it names the damage, for reading and for writing."""
    damaged = _damaged_copy(results_db, tmp_path, "the results root")
    for writable in (False, True):
        store = Store(shutil.copy(results_db, tmp_path / f"ok-{writable}.db"), create=writable)
        run = store.latest_run()
        result = store.results(run.run_id)[0]
        store.db.close()
        store.db = sqlite3.connect(damaged, isolation_level=None)  # as if the disk went bad under the run
        store.path = damaged
        with pytest.raises(DatabaseDamaged, match="is damaged"):
            store.results(run.run_id)
        if writable:
            with pytest.raises(DatabaseDamaged, match="is damaged"):
                store.add(run.run_id, result)
        store.db.close()


@pytest.mark.timeout(180)
def test_a_store_failure_mid_fuzz_stops_the_search_in_one_line(tmp_path, monkeypatch):
    """An error inside Hypothesis's search (here the store, as a disk going bad would) stops the
    fuzz run; Hypothesis must not take it for a failing config and keep trying on a stopped pool."""
    from rich.console import Console

    from deploykit.fuzz.search import FuzzRequest, fuzz

    calls = []

    def failing_add(self, run_id, result):
        calls.append(result)
        if len(calls) > 1:
            raise DatabaseDamaged(f"results database {self.path} is damaged (test)")

    monkeypatch.setattr(Store, "add", failing_add)
    started = time.monotonic()
    with pytest.raises(DatabaseDamaged, match="is damaged"):
        fuzz(FuzzRequest(backends=["reference"], max_examples=20, db=tmp_path / "f.db"), Console(file=None, quiet=True))
    assert time.monotonic() - started < 120
