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
from helpers import ROOT, deploykit

from deploykit.cli import main
from deploykit.results.dbcheck import DatabaseDamaged
from deploykit.results.store import SCHEMA_VERSION, Store


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
    elif how == "junk numbers":
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE results SET max_abs_err = 'big', duration_ms = 'slow' WHERE rowid < 5")
        connection.close()
    elif how == "junk environment":
        with sqlite3.connect(db) as connection:
            connection.execute("""UPDATE runs SET environment = '{"packages": 5, "gpus": 7}'""")
        connection.close()
    elif how == "junk layout":
        with sqlite3.connect(db) as connection:
            connection.execute("ALTER TABLE results DROP COLUMN verdict")
        connection.close()


DAMAGE = ["a results page", "the results root", "truncated", "junk rows", "junk results", "junk numbers", "junk environment",
          "junk layout"]
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


@pytest.mark.slow
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


@pytest.mark.parametrize("how, command", [(how, "report") for how in DAMAGE]
                         + [(how, "run") for how in DAMAGE if how not in ("junk results", "junk numbers")])
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


@pytest.mark.slow
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


# ----- databases from older schemas -----------------------------------------------------------
#: The tables as schema versions 1 (the first store) and 2 (runs.owner, accumulation columns) made
#: them, from deploykit/results/store.py's history; each version wrote its number into meta.
_V1_RESULT_COLUMNS = ["config_id", "label", "backend", "dtype", "verdict", "reason", "known_divergence", "expect",
                      "max_abs_err", "max_rel_err", "rel_l2_err", "max_ulp_err", "bound_ratio", "expected_shape",
                      "actual_shape", "onnx_inferred_shape", "backend_version", "duration_ms", "spec",
                      "latency_median_ms", "latency_p99_ms", "latency_cv", "gflops", "setup_ms"]
_V2_RESULT_COLUMNS = _V1_RESULT_COLUMNS[:13] + ["accumulation", "float32_sum_ratio"] + _V1_RESULT_COLUMNS[13:]
_JSON_COLUMNS = {"expected_shape", "actual_shape", "onnx_inferred_shape", "spec"}


def _old_database(path: Path, version: int, precision: str | None) -> dict:
    """A database as schema `version` wrote it, one run started with `precision` (None: before the
    option existed), one result with every column set; returns that result's values."""
    columns = _V1_RESULT_COLUMNS if version == 1 else _V2_RESULT_COLUMNS
    owner = ",\n    owner TEXT" if version == 2 else ""
    schema = f"""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY AUTOINCREMENT, started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL,
        matrix TEXT NOT NULL, parameters TEXT NOT NULL, environment TEXT NOT NULL, planned INTEGER NOT NULL{owner});
    CREATE TABLE results (
        run_id INTEGER NOT NULL REFERENCES runs(run_id),
        {", ".join(f"{c} {'TEXT' if c in _JSON_COLUMNS else ''}".strip() for c in columns)},
        recorded_at REAL NOT NULL,
        PRIMARY KEY (run_id, config_id, expect, backend));
    """
    spec = {"input_shape": [1, 2, 3, 3], "out_channels": 2, "kernel_shape": [2, 2], "dtype": "float32"}
    values = {"config_id": "abc123def456", "label": "2d-old", "backend": "ort-cpu", "dtype": "float32", "verdict": "drift",
              "reason": "too far", "known_divergence": "some-entry", "expect": "accept", "max_abs_err": 0.5,
              "max_rel_err": 0.25, "rel_l2_err": 0.125, "max_ulp_err": 7, "bound_ratio": 3.5, "accumulation": "one float32 sum",
              "float32_sum_ratio": 1.5, "expected_shape": [1, 2, 4, 4], "actual_shape": [1, 2, 4, 4],
              "onnx_inferred_shape": [1, 2, 4, 4], "backend_version": "1.17.0", "duration_ms": 12.5, "spec": spec,
              "latency_median_ms": 0.75, "latency_p99_ms": 0.875, "latency_cv": 0.01, "gflops": 2.5, "setup_ms": 30.0}
    parameters = {"backends": ["ort-cpu"], "dtypes": None} | ({"precision": precision} if precision else {})
    with sqlite3.connect(path) as connection:
        connection.executescript(schema)
        connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
        connection.execute("INSERT INTO runs (started_at, finished_at, status, matrix, parameters, environment, planned)"
                           " VALUES (1.0, 2.0, 'complete', 'old', ?, '{\"cpu\": \"old cpu\"}', 1)", (json.dumps(parameters),))
        row = [json.dumps(values[c]) if c in _JSON_COLUMNS else values[c] for c in columns]
        placeholders = ", ".join("?" * len(columns))
        names = ", ".join(columns)
        connection.execute(f"INSERT INTO results (run_id, {names}, recorded_at) VALUES (1, {placeholders}, 3.0)", row)
    connection.close()
    return {c: values[c] for c in columns}


OLD_SCHEMAS = [(1, None), (1, "tf32"), (2, "fp32"), (2, "tf32")]


@pytest.mark.parametrize("version, precision", OLD_SCHEMAS)
def test_a_database_from_before_schema_3_reads_every_column_right(tmp_path, version, precision):
    """A result from before schema 3 was built at its run's precision (fp32 before the option
    existed): a report reads that, as the migration writes it, never a precision of None."""
    written = _old_database(tmp_path / "old.db", version, precision)
    store = Store(tmp_path / "old.db", create=False)
    [result] = store.results(1)
    store.close()
    read = result.as_dict()
    assert {c: read[c] for c in written} == written
    assert result.precision == (precision or "fp32")
    assert result.backend_label == ("ort-cpu" if precision in (None, "fp32") else f"ort-cpu ({precision})")
    assert all(read[c] is None for c in read if c not in written and c != "precision")


@pytest.mark.parametrize("version, precision", OLD_SCHEMAS)
def test_reading_and_migrating_an_old_database_agree(capsys, tmp_path, version, precision):
    """The JSON report of an old database is the same before and after a run migrates it."""
    db = tmp_path / "old.db"
    _old_database(db, version, precision)
    code, before, err = cli(capsys, "conformance", "report", "--db", str(db), "--format", "json", "--run", "1")
    assert code == 0, err
    store = Store(db)  # a writer migrates
    store.close()
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT value FROM meta").fetchone()[0] == str(SCHEMA_VERSION)
    connection.close()
    code, after, err = cli(capsys, "conformance", "report", "--db", str(db), "--format", "json", "--run", "1")
    assert code == 0, err
    assert json.loads(before)["results"] == json.loads(after)["results"]
    assert json.loads(after)["results"][0]["precision"] == (precision or "fp32")


# ----- YAML: nesting, alias bombs, size --------------------------------------------------------
def _alias_bomb(levels: int = 9) -> str:
    """Billion laughs: each anchor lists the one before ten times, so a few lines stand for 10^levels values."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def _nested_aliases() -> str:
    """Anchors 60 levels deep, each nested inside the next through an alias: shallow as written, 2,400 levels expanded."""
    lines = ["a0: &a0 " + "[" * 60 + "]" * 60]
    lines += [f"a{i}: &a{i} " + "[" * 60 + f"*a{i - 1}" + "]" * 60 for i in range(1, 40)]
    return "\n".join(lines) + "\n"


HOSTILE_YAML = {
    "deep flow nesting": ("[" * 100_000, "nested more than 64 levels"),
    "deep block nesting": ("".join(" " * i + "-\n" for i in range(300)), "nested more than 64 levels"),
    "alias bomb": (_alias_bomb(), "more than 1,000,000 values once its aliases are expanded"),
    "aliases nested deep": (_nested_aliases(), "nested more than 64 levels deep once its aliases are expanded"),
    "huge file": ("cases:\n" + "  - {input_shape: [1, 1, 4], out_channels: 1, kernel_shape: 1}\n" * 20_000, "larger than 1 MiB"),
    "integer of 5000 digits": ("cases:\n  - {input_shape: [1, 1, " + "9" * 5000 + "], out_channels: 1, kernel_shape: 1}\n",
                               "malformed YAML"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HOSTILE_YAML))
def test_hostile_yaml_is_refused_fast_in_bounded_memory(tmp_path, name):
    import tracemalloc

    from deploykit.errors import UsageError
    from deploykit.yamlfile import read_yaml

    text, message = HOSTILE_YAML[name]
    (tmp_path / "m.yaml").write_text(text)
    started = time.perf_counter()
    with pytest.raises(UsageError, match=message):
        read_yaml(tmp_path / "m.yaml", "matrix")
    elapsed = time.perf_counter() - started
    tracemalloc.start()  # apart from the timing: tracing slows every allocation
    try:
        with pytest.raises(UsageError, match=message):
            read_yaml(tmp_path / "m.yaml", "matrix")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 64 << 20, (elapsed, peak)


@pytest.mark.slow
@pytest.mark.parametrize("what, args", [
    ("matrix", ("conformance", "run", "--matrix", "{file}", "--db", "{tmp}/r.db")),
    ("matrix", ("generate", "--matrix", "{file}", "--out", "{tmp}/suite")),
    ("known-divergence table", ("conformance", "report", "--db", "{db}")),
    ("engine profile", ("export", "zoo:tied", "--engine", "{tmp}/e.plan", "--engine-profile", "{file}")),
])
@pytest.mark.parametrize("name", ["deep flow nesting", "alias bomb"])
def test_every_yaml_a_command_reads_is_limited(capsys, results_db, tmp_path, what, args, name):
    file = tmp_path / ("known_divergences.yaml" if what == "known-divergence table" else "hostile.yaml")
    file.write_text(HOSTILE_YAML[name][0])
    if what == "known-divergence table":  # a table from before stored tables: a report reads the current one
        db = shutil.copy(results_db, tmp_path / "r.db")
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE runs SET known_divergences = NULL")
        connection.close()
        (tmp_path / "matrices").mkdir()
        proc = deploykit(*(arg.format(db=db) for arg in args), env={"DEPLOYKIT_CONFORMANCE_DIR": str(tmp_path)})
        code, err = proc.returncode, proc.stderr  # the table's path is fixed when deploykit is imported
    else:
        code, _, err = cli(capsys, *(arg.format(file=file, tmp=tmp_path) for arg in args))
    one_line_error(code, err, what, str(file), HOSTILE_YAML[name][1])


# ----- --shard K/N -----------------------------------------------------------------------------
@pytest.mark.parametrize("shard, message", [
    ("1/" + "1" + "0" * 20, "must be K/N"), ("1/10^20", "must be K/N"), ("0/3", "K must be from 1 to N"),
    ("4/3", "K must be from 1 to N"), ("-1/3", "must be K/N"), ("1/0", "N must be from 1"), ("a/b", "must be K/N"),
    ("²/3", "must be K/N"), ("1/" + "9" * 5000, "must be K/N"), ("3", "must be K/N"), ("1/40", "only 31 tasks"),
])
@pytest.mark.parametrize("command", ["run", "judge"])
def test_a_shard_out_of_bounds_is_refused_before_any_work(capsys, inputs, tmp_path, shard, message, command):
    if command == "run":
        args = ["conformance", "run", "--matrix", "smoke", "--backends", "reference", "--db", str(tmp_path / "s.db")]
    else:
        shutil.copytree(inputs / "tree", tmp_path / "tree")
        args = ["conformance", "judge", str(tmp_path / "tree"), "--as", "reference", "--db", str(tmp_path / "s.db")]
        message = "is only 1 task to split" if shard == "1/40" else message
    code, _, err = cli(capsys, *args, f"--shard={shard}")
    one_line_error(code, err, "--shard", message)
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("stored", [[1, 10**20], [1, "3"], "1/3", [0, 3], [True, 2], [1, 2, 3]])
def test_merge_refuses_a_shard_no_deploykit_writes(capsys, results_db, tmp_path, stored):
    """A shard database whose recorded K/N is absurd (edited, damaged) is refused, not counted out."""
    shard = shutil.copy(results_db, tmp_path / "shard.db")
    with sqlite3.connect(shard) as connection:
        connection.execute("UPDATE runs SET parameters = json_set(parameters, '$.shard', json(?))", (json.dumps(stored),))
    connection.close()
    code, _, err = cli(capsys, "conformance", "merge", str(shard), "-o", str(tmp_path / "all.db"))
    one_line_error(code, err, str(shard), "records shard", "never writes")
    assert not (tmp_path / "all.db").exists()


# ----- runs that test nothing; reports of unfinished fuzz runs ----------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("command", [
    ("conformance", "run", "--matrix", "{tmp}/m.yaml", "--json", "{tmp}/r.json"),
    ("conformance", "fuzz", "--max-examples", "2", "--json", "{tmp}/r.json"),
])
def test_a_run_that_tests_nothing_is_no_pass(capsys, tmp_path, command):
    """Every result `unsupported` (ort-cpu has no bfloat16 kernel): stored and reported, but exit 2,
    so a CI job that asked for it does not go green having tested nothing."""
    (tmp_path / "m.yaml").write_text(f"cases:\n  - {LAYER}\n")
    args = [arg.format(tmp=tmp_path) for arg in command] + ["--backends", "ort-cpu", "--dtypes", "bfloat16",
                                                          "--db", str(tmp_path / "r.db")]
    code, out, err = cli(capsys, *args)
    one_line_error(code, err, "nothing was tested", "unsupported or unavailable", "has no bfloat16")
    store = Store(tmp_path / "r.db", create=False)
    run = store.latest_run()
    assert run.complete and {r.verdict for r in store.results(run.run_id)} == {"unsupported"}
    store.close()
    assert (tmp_path / "r.json").is_file()


@pytest.mark.slow
def test_an_unfinished_fuzz_run_says_to_resume_it_with_fuzz(capsys, tmp_path):
    db = tmp_path / "f.db"
    code, _, err = cli(capsys, "conformance", "fuzz", "--backends", "reference", "--max-examples", "2", "--db", str(db))
    assert code in (0, 1), err
    with sqlite3.connect(db) as connection:  # as if the fuzz run had been killed
        connection.execute("UPDATE runs SET status = 'running', finished_at = NULL")
    connection.close()
    for format_ in ("table", "md", "html"):
        code, out, err = cli(capsys, "conformance", "report", "--db", str(db), "--format", format_)
        assert code == 0, err
        assert "conformance fuzz --resume" in out and "conformance run --resume" not in out, out


# ----- malformed JSON baselines for compare ---------------------------------------------------
def _set(path: tuple, value):
    def change(report: dict) -> None:
        target = report
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return change


def _drop(path: tuple):
    def change(report: dict) -> None:
        target = report
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]
    return change


MALFORMED = {
    "bound_ratio a word": (_set(("results", 0, "bound_ratio"), "big"), "results[0].bound_ratio: must be a valid number"),
    "bound_ratio a numeric string": (_set(("results", 0, "bound_ratio"), "1.5"), "results[0].bound_ratio"),
    "config_id a list": (_set(("results", 0, "config_id"), ["a", "b"]), "results[0].config_id: must be a string"),
    "label a number": (_set(("results", 1, "label"), 7), "results[1].label: must be a string"),
    "backend null": (_set(("results", 0, "backend"), None), "results[0].backend"),
    "verdict missing": (_drop(("results", 0, "verdict")), "results[0].verdict: is required"),
    "config_id missing": (_drop(("results", 2, "config_id")), "results[2].config_id: is required"),
    "verdict unknown": (_set(("results", 0, "verdict"), "fine"), "unknown verdict 'fine'"),
    "expect unknown": (_set(("results", 0, "expect"), "maybe"), "results[0].expect"),
    "max_ulp_err a string": (_set(("results", 0, "max_ulp_err"), "7"), "results[0].max_ulp_err"),
    "latency a list": (_set(("results", 0, "latency_median_ms"), [1.0]), "results[0].latency_median_ms"),
    "spec a string": (_set(("results", 0, "spec"), "2d"), "results[0].spec: must be a mapping"),
    "shape of strings": (_set(("results", 0, "actual_shape"), ["1", "2"]), "results[0].actual_shape[0]"),
    "known_divergence a mapping": (_set(("results", 0, "known_divergence"), {"id": "x"}), "results[0].known_divergence"),
    "a record a list": (_set(("results", 0), ["x"]), "results[0]: must be a mapping"),
    "a record a number": (_set(("results", 3), 5), "results[3]: must be a mapping"),
    "run a list": (_set(("run",), [1]), "run: must be a mapping"),
    "run complete a string": (_set(("run", "complete"), "yes"), "run.complete"),
    "run id a boolean": (_set(("run", "run_id"), True), "run.run_id"),
    "run shard a string": (_set(("run", "shard"), "1/3"), "run.shard"),
    "run environment a list": (_set(("run", "environment"), ["cpu"]), "run.environment"),
    "every record wrong": (lambda r: [x.__setitem__("bound_ratio", "big") for x in r["results"]], "; and "),
    "a record twice": (lambda r: r["results"].append(r["results"][0]), "is a second record of"),
    "results a mapping": (_set(("results",), {"a": 1}), "not a deploykit JSON report"),
    "the report a list": (lambda r: None, "not a deploykit JSON report"),
}


@pytest.fixture(scope="module")
def json_report(results_db, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("json")
    assert main(["conformance", "report", "--db", str(results_db), "--format", "json", "-o", str(folder / "r.json")]) == 0
    return json.loads((folder / "r.json").read_text())


@pytest.mark.parametrize("name", list(MALFORMED))
@pytest.mark.parametrize("side", ["--baseline", "--db"])
def test_a_malformed_json_report_is_a_usage_error_never_a_regression(capsys, results_db, json_report, tmp_path, name, side):
    change, message = MALFORMED[name]
    report = json.loads(json.dumps(json_report))
    change(report)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([report] if name == "the report a list" else report))
    other = {"--baseline": "--db", "--db": "--baseline"}[side]
    code, _, err = cli(capsys, "conformance", "compare", side, str(bad), other, str(results_db))
    one_line_error(code, err, str(bad), message)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"results": ' + "[" * 5000 + "]" * 5000 + "}",
                                  "\udcff".encode("utf-8", "surrogatepass").decode("latin-1")])
def test_json_that_is_no_report_at_all_is_one_line(capsys, results_db, tmp_path, text):
    bad = tmp_path / "bad.json"
    bad.write_text(text, encoding="latin-1")
    code, _, err = cli(capsys, "conformance", "compare", "--baseline", str(bad), "--db", str(results_db))
    one_line_error(code, err, str(bad))


def test_a_well_formed_json_report_still_compares(capsys, results_db, json_report, tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(json_report))
    code, out, err = cli(capsys, "conformance", "compare", "--baseline", str(tmp_path / "good.json"), "--db", str(results_db))
    assert code == 0, err


# ----- repro's memory budget; stored configs no deploykit wrote --------------------------------
def _stored_result(db: Path, spec, backend: str = "ort-cpu", verdict: str = "rejected") -> None:
    from deploykit.results.result import Result

    store = Store(db)
    run_id = store.start_run("test", {}, {"cpu": "test cpu"}, 1)
    store.add(run_id, Result.for_spec(spec, backend, verdict=verdict, reason="refused"))
    store.finish_run(run_id)
    store.close()


@pytest.mark.parametrize("shape, option, message", [
    ((1, 4, 64, 64), ["--max-memory", "1M"], "over the 1 MiB budget"),
    ((1, 1, 100_000, 100_000), [], "needs about"),  # the default budget: at most 4 GiB
])
def test_repro_refuses_a_config_over_its_memory_budget_before_any_work(capsys, tmp_path, shape, option, message):
    from deploykit.op.spec import ConvTransposeSpec

    spec = ConvTransposeSpec(shape, 2, (3, 3))
    _stored_result(tmp_path / "r.db", spec)
    code, _, err = cli(capsys, "repro", "--db", str(tmp_path / "r.db"), "--config", spec.id, "--backend", "ort-cpu",
                       "-o", str(tmp_path / "bundle"), *option)
    one_line_error(code, err, message, "--max-memory")
    assert not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("spec", [{"input_shape": [1, 2, 3, 3]}, {"nonsense": 1},
                                  {"input_shape": "x", "out_channels": 1, "kernel_shape": 1}])
@pytest.mark.parametrize("command", ["repro", "report"])
def test_a_stored_config_no_deploykit_wrote_is_one_line(capsys, tmp_path, spec, command):
    from deploykit.op.spec import ConvTransposeSpec

    good = ConvTransposeSpec((1, 2, 3, 3), 2, (2, 2), output_shape=(9, 9))
    _stored_result(tmp_path / "r.db", good, verdict="shape-mismatch")
    with sqlite3.connect(tmp_path / "r.db") as connection:  # a shape disagreement makes the report read the config
        connection.execute("UPDATE results SET spec = ?, onnx_inferred_shape = '[1, 2, 4, 4]'", (json.dumps(spec),))
    connection.close()
    args = (["repro", "--config", good.id, "--backend", "ort-cpu", "-o", str(tmp_path / "bundle")] if command == "repro"
            else ["conformance", "report"])
    code, _, err = cli(capsys, *args, "--db", str(tmp_path / "r.db"))
    one_line_error(code, err, "holds a config deploykit cannot read")


# ----- generate: configs ONNX's own full check rejects ------------------------------------------
#: output_shape below the input's spatial size: onnx 1.23's strict shape inference infers rank 2 for the output
UNCHECKABLE = [
    "{name: same-upper-1d, input_shape: [1, 1, 5], out_channels: 1, kernel_shape: 3, strides: 2, auto_pad: SAME_UPPER,"
    " output_shape: [3]}",
    "{name: same-lower-2d, input_shape: [1, 2, 5, 5], out_channels: 2, kernel_shape: 3, strides: 2, auto_pad: SAME_LOWER,"
    " output_shape: [1, 1]}",
    "{name: notset-2d, input_shape: [1, 1, 5, 5], out_channels: 2, kernel_shape: 1, output_shape: [3, 3]}",
]


@pytest.mark.parametrize("config", UNCHECKABLE)
def test_generate_writes_a_case_onnx_check_rejects_and_says_so(capsys, tmp_path, config):
    import yaml

    from deploykit.onnxio.write import build_case, check_problem
    from deploykit.op.spec import ConvTransposeSpec

    spec = ConvTransposeSpec.from_dict({k: v for k, v in yaml.safe_load(config).items() if k != "name"})
    if check_problem(build_case(spec).model) is None:
        pytest.skip("this onnx's full check accepts the config (its shape inference was fixed)")
    (tmp_path / "m.yaml").write_text(f"cases:\n  - {config}\n  - {LAYER}\n")
    code, out, err = cli(capsys, "generate", "--matrix", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "tree"))
    assert code == 0 and "Traceback" not in err, err
    assert "wrote 2 test case(s)" in out
    assert len(err.splitlines()) == 1 and "ONNX's own full check" in err and "rejects 1 case(s)" in err, err
    written = [json.loads(path.read_text()) for path in (tmp_path / "tree").glob("*/deploykit.json")]
    checks = {meta["id"]: meta["onnx_check"] for meta in written}
    assert "ShapeInferenceError" in checks.pop(spec.id) and list(checks.values()) == [None]
    for data in (tmp_path / "tree").glob("*/test_data_set_0"):  # the tree is judged like any other
        shutil.copy(data / "output_0.pb", data / "actual_0.pb")
    code, out, err = cli(capsys, "conformance", "judge", str(tmp_path / "tree"), "--as", "reference",
                         "--db", str(tmp_path / "j.db"))
    assert code == 0, err


# ----- resume messages speak in options, not Python reprs --------------------------------------
def _unfinished(db: Path, parameters: dict | None = None) -> None:
    """Mark the database's last run unfinished and not live (as a run killed on another host)."""
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE runs SET status = 'running', finished_at = NULL, owner = NULL")
        for key, value in (parameters or {}).items():
            connection.execute("UPDATE runs SET parameters = json_set(parameters, ?, json(?))", (f"$.{key}", json.dumps(value)))
    connection.close()


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["--backends", "ort-cpu,torch-cpu"], "with --backends reference, not --backends ort-cpu,torch-cpu"),
    (["--dtypes", "float16"], "with no --dtypes (the default), not --dtypes float16; drop --dtypes"),
    (["--shard", "1/2"], "with --shard 1/1, not --shard 1/2"),
    (["--atol", "0.5"], "with --atol 0.1 --rtol 0, not --atol 0.5 --rtol 0; drop --atol/--rtol"),
    (["--latency", "--iterations", "3"], "with no --latency and its timing options (the default), not --latency --warmup-ms"),
    (["--precisions", "fp16"], "with --precisions fp32, not --precisions fp16"),
])
def test_run_resume_messages_name_options_as_typed(capsys, tmp_path, args, expected):
    (tmp_path / "m.yaml").write_text(f"cases:\n  - {LAYER}\n")
    db = str(tmp_path / "r.db")
    code, _, err = cli(capsys, "conformance", "run", "--matrix", str(tmp_path / "m.yaml"), "--backends", "reference",
                       "--shard", "1/1", "--db", db)
    assert code == 0, err
    _unfinished(tmp_path / "r.db", {"tolerance": {"atol": 0.1, "rtol": 0.0}})
    code, _, err = cli(capsys, "conformance", "run", "--resume", "--db", db, *args)
    line = one_line_error(code, err, expected)
    assert not any(mark in line for mark in ("[", "]", "None", "{", "(1, ")), line


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    (["--seed", "3"], "with --seed 0, not --seed 3; drop --seed"),
    (["--dtypes", "float16"], "with --dtypes float32, not --dtypes float16"),
    (["--backends", "ort-cpu"], "with --backends reference, not --backends ort-cpu"),
    (["--budget", "5"], "with --budget"),
])
def test_fuzz_resume_messages_name_options_as_typed(capsys, tmp_path, args, expected):
    db = str(tmp_path / "f.db")
    code, _, err = cli(capsys, "conformance", "fuzz", "--backends", "reference", "--dtypes", "float32", "--max-examples", "1",
                       "--db", db)
    assert code in (0, 1), err
    _unfinished(tmp_path / "f.db", {"budget": 12.5} if "--budget" in args else None)
    code, _, err = cli(capsys, "conformance", "fuzz", "--resume", "--db", db, *args)
    line = one_line_error(code, err, expected)
    assert not any(mark in line for mark in ("[", "]", "None", "{")), line


# ----- long runtime messages ---------------------------------------------------------------------
#: a refusal whose explanation comes last, as ONNX Runtime's and OpenVINO's do
LONG_REFUSAL = ("while running node ConvTranspose_0 in graph main: " + "frame " * 60
                + "; the explanation: output_padding (3) may be too large for stride (2)")


def test_a_long_runtime_message_is_kept_whole_and_cut_only_in_the_terminal_table(capsys, tmp_path):
    from deploykit.backends.base import Availability, Backend, BuildConfig, CallableRunner
    from deploykit.execution.execute import run_backend
    from deploykit.onnxio.write import build_case
    from deploykit.op.spec import ConvTransposeSpec
    from deploykit.results.result import Result

    class Verbose(Backend):
        name = "verbose"

        def load(self, case, config):
            def refuse(feeds):
                raise RuntimeError(LONG_REFUSAL)
            return CallableRunner(refuse)

    spec = ConvTransposeSpec((1, 2, 3, 3), 2, (2, 2))
    outcome = run_backend(Verbose(), Availability(True, "1"), build_case(spec), BuildConfig())
    assert outcome.status == "rejected" and outcome.reason == " ".join(LONG_REFUSAL.split())
    db = tmp_path / "r.db"
    store = Store(db)
    run_id = store.start_run("test", {}, {}, 1)
    store.add(run_id, Result.for_spec(spec, "ort-cpu", "rejected", outcome.reason))
    store.finish_run(run_id)
    store.close()
    code, out, err = cli(capsys, "conformance", "report", "--db", str(db), "--format", "json")
    assert code == 0 and json.loads(out)["results"][0]["reason"].endswith("may be too large for stride (2)")
    code, out, err = cli(capsys, "conformance", "report", "--db", str(db))
    table = " ".join(out.replace("│", " ").split())
    assert "characters: `conformance report --format json` shows them all" in table and "the explanation" not in table


# ----- the size of the known-divergence table a run stores ---------------------------------------
@pytest.mark.slow
def test_a_table_over_the_limit_is_refused_before_a_run_stores_it(tmp_path):
    """A run stores the table it was judged with: the table is at most 1 MiB (the YAML limit), so
    no run copies a huge one; a table just over is one line before any work, and no database."""
    entry = ("- id: entry-{i}\n  backends: [ort-cpu]\n  hazard: output_padding_ge_stride\n  verdicts: [rejected]\n"
             "  reason: a runtime refuses output_padding at or above the stride, said here at some length\n"
             "  upstream: https://example.org/issues/{i}\n")
    table = "".join(entry.format(i=i) for i in range(6000))
    assert len(table) > 1 << 20
    (tmp_path / "known_divergences.yaml").write_text(table)
    shutil.copytree(ROOT / "conformance" / "matrices", tmp_path / "matrices")
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "reference", "--db", "r.db", cwd=tmp_path,
                     env={"DEPLOYKIT_CONFORMANCE_DIR": str(tmp_path)})
    one_line_error(proc.returncode, proc.stderr, "known-divergence table", "larger than 1 MiB")
    assert not (tmp_path / "r.db").exists()


# ----- answers and case files conformance judge reads --------------------------------------------
def _npy_header_only(path: Path, shape: tuple) -> None:
    """A .npy whose header declares `shape` but whose data is 64 bytes: a truncated or forged file."""
    import struct

    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header = header + " " * (118 - len(header)) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64)


@pytest.mark.parametrize("name, write, message", [
    ("actual_0.npy", lambda p: _npy_header_only(p, (10**8, 10**8)), "its header declares shape 100000000x100000000"),
    ("actual_0.npy", lambda p: _npy_header_only(p, (1, 2, 3, 3)), "but it holds 64"),
    ("actual.json", lambda p: p.write_text("[" * 100_000), "not trtexec's --exportOutput JSON"),
    ("../deploykit.json", lambda p: p.write_text("[" * 100_000), "not a deploykit.json"),
])
def test_a_hostile_answer_or_case_file_is_one_line(capsys, inputs, tmp_path, name, write, message):
    tree = Path(shutil.copytree(inputs / "tree", tmp_path / "tree"))
    [data] = tree.glob("*/test_data_set_0")
    (data / "actual_0.pb").unlink()
    write(data / name)
    code, _, err = cli(capsys, "conformance", "judge", str(tree), "--as", "reference", "--db", str(tmp_path / "j.db"))
    one_line_error(code, err, message)
    assert not (tmp_path / "j.db").exists()


# ----- every command that draws arrays from a user's file checks its memory budget first ------------
def test_profile_refuses_a_model_declaring_huge_inputs_before_drawing_them(capsys, inputs, tmp_path):
    import onnx

    model = onnx.load(str(inputs / "layer.onnx"))
    for dim, size in zip(model.graph.input[0].type.tensor_type.shape.dim, (1, 2, 100_000, 100_000)):
        dim.dim_value = size
    onnx.save(model, str(tmp_path / "huge.onnx"))
    code, _, err = cli(capsys, "profile", str(tmp_path / "huge.onnx"), "--backends", "reference")
    one_line_error(code, err, "1x2x100000x100000", "needs about", "over the", "--max-memory")
    code, _, err = cli(capsys, "profile", "--matrix", "smoke", "--config", "1d-basic", "--backends", "reference",
                       "--batch", "100000000000")
    one_line_error(code, err, "1d-basic", "needs about", "--max-memory")


def test_judge_refuses_a_case_over_the_memory_budget_before_drawing_it(capsys, inputs, tmp_path):
    """A forged (or hand-edited) case whose config needs more than the budget: named, never drawn."""
    from deploykit.op.spec import ConvTransposeSpec

    tree = Path(shutil.copytree(inputs / "tree", tmp_path / "tree"))
    [meta_path] = tree.glob("*/deploykit.json")
    meta = json.loads(meta_path.read_text())
    huge = ConvTransposeSpec((1, 2, 100_000, 100_000), meta["out_channels"], tuple(meta["kernel_shape"]))
    meta.update(huge.to_dict(), id=huge.id)
    meta_path.write_text(json.dumps(meta))
    code, _, err = cli(capsys, "conformance", "judge", str(tree), "--as", "reference", "--db", str(tmp_path / "j.db"))
    one_line_error(code, err, "needs about", "--max-memory")
    assert not (tmp_path / "j.db").exists()


# ----- matrices whose axes would expand without end -------------------------------------------------
def _axes_matrix(count: int, keys: tuple[str, ...], header: str = "") -> str:
    values = ", ".join(str(i) for i in range(1, count + 1))
    axes = "".join(f"  {key}: [{values}]\n" for key in keys)
    return f"defaults: {{input_shape: [1, 1, 4], out_channels: 1, kernel_shape: 1}}\n{header}axes:\n{axes}"


@pytest.mark.slow
@pytest.mark.parametrize("text, message", [
    (_axes_matrix(30, ("strides", "dilations", "out_channels", "pads", "output_padding"), "expand: product\n"),
     "its axes ask for 24,300,000 rows"),
    (_axes_matrix(30, ("strides", "dilations", "out_channels", "pads", "kernel_shape"), "cross: [strides, dilations, pads]\n"),
     "its axes ask for"),
    (_axes_matrix(30, ("strides", "dilations", "out_channels", "kernel_shape", "pads", "output_padding")),
     "tried 100,000 rows, most of which break an ONNX rule"),
])
@pytest.mark.timeout(120)
def test_axes_that_would_expand_without_end_are_refused(tmp_path, text, message):
    from deploykit.conformance.matrix import load
    from deploykit.errors import UsageError

    (tmp_path / "m.yaml").write_text(text)
    started = time.perf_counter()
    with pytest.raises(UsageError, match=message):
        load(str(tmp_path / "m.yaml"))
    assert time.perf_counter() - started < 60


# ----- --resume rebuilds a run from its stored parameters: they are checked first -----------------
@pytest.mark.parametrize("parameters, message", [
    ({}, "matrix: is required"),
    ({"matrix": 5, "backends": "reference"}, "matrix: must be a string"),
    ({"matrix": "smoke", "backends": ["reference"], "tolerance": [1], "precisions": 7}, "tolerance: must be a mapping"),
    ({"matrix": "smoke", "backends": ["reference"], "latency": {"warmup_ms": 1, "bogus": 2}}, "latency.bogus: unknown key"),
    ({"matrix": "smoke", "backends": ["reference"], "shard": [1, 10**20]}, "shard[1]"),
])
def test_run_resume_refuses_stored_parameters_no_deploykit_writes(capsys, results_db, tmp_path, parameters, message):
    db = shutil.copy(results_db, tmp_path / "r.db")
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE runs SET status = 'running', owner = NULL, parameters = ?", (json.dumps(parameters),))
    connection.close()
    code, _, err = cli(capsys, "conformance", "run", "--resume", "--db", str(db))
    one_line_error(code, err, "is damaged: run 1's stored parameters", message)


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    ({"seed": "zero"}, "seed: must be a valid integer"),
    ({"backends": []}, "backends: must not be empty"),
    ({"dtypes": None}, "dtypes"),
    ({"budget": -5}, "budget"),
])
def test_fuzz_resume_refuses_stored_parameters_no_deploykit_writes(capsys, tmp_path, change, message):
    db = str(tmp_path / "f.db")
    code, _, err = cli(capsys, "conformance", "fuzz", "--backends", "reference", "--dtypes", "float32", "--max-examples", "1",
                       "--db", db)
    assert code in (0, 1), err
    _unfinished(tmp_path / "f.db", change)
    code, _, err = cli(capsys, "conformance", "fuzz", "--resume", "--db", db)
    one_line_error(code, err, "is damaged: run 1's stored parameters", message)
