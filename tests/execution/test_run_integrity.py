"""A run's results and exit codes stay trustworthy when things go wrong around the backends:
oversized configs, too many workers, workers that do not start, interruptions, resumes that do
not match, foreign or read-only databases, a full disk."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, assert_usage_error, deploykit, without_root_overrides

from deploykit.execution import resources
from deploykit.execution.harness import Task, WorkerOptions, run_tasks
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results.store import SCHEMA_VERSION

LAYER = "{input_shape: [1, 2, 3, 3], out_channels: 2, kernel_shape: 2}"


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----- resource limits ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        "{name: huge-input, input_shape: [1, 1, 100000, 100000], out_channels: 1, kernel_shape: 3}",
        "{name: huge-kernel, input_shape: [1, 1, 4], out_channels: 1, kernel_shape: 1000000000}",
    ],
)
@pytest.mark.parametrize("command", ["run", "generate"])
def test_an_oversized_config_is_refused_before_any_work(tmp_path, config, command):
    (tmp_path / "m.yaml").write_text(f"cases:\n  - {config}\n")
    if command == "run":
        proc = deploykit("conformance", "run", "--matrix", "m.yaml", "--db", "x.db", cwd=tmp_path)
    else:
        proc = deploykit("generate", "--matrix", "m.yaml", "--out", "suite", cwd=tmp_path)
    assert_usage_error(proc, "config huge-", "needs about", "--max-memory")
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "suite").exists()


@pytest.mark.slow
def test_max_memory_sets_the_budget(tmp_path):
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--db", "x.db", "--max-memory", "16K", cwd=tmp_path)
    assert_usage_error(proc, "over the 16 KiB budget")
    assert_usage_error(deploykit("conformance", "run", "--max-memory", "lots", cwd=tmp_path), "--max-memory 'lots'")


def test_parse_size_units():
    assert resources.parse_size("512") == 512
    assert resources.parse_size("4k") == 4096
    assert resources.parse_size("1.5GiB") == 3 << 29
    assert resources.parse_size("2 G") == 2 << 30


@pytest.mark.slow
def test_the_estimate_covers_what_a_task_really_allocates():
    """tracemalloc sees NumPy's allocations (deploykit's reference and bound, the inputs): the
    estimate must be above their real peak, and not absurdly so."""
    import tracemalloc

    from deploykit.execution.execute import Executor

    spec = ConvTransposeSpec((2, 32, 12, 12), 16, (5, 5), strides=2, pads=1, dtype="float16")
    executor = Executor(known=[])
    executor.run(spec.replace(input_shape=(1, 32, 3, 3)), "torch-cpu")  # imports outside the trace
    tracemalloc.start()
    try:
        result = executor.run(spec, "torch-cpu")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.verdict == "pass"
    estimate = resources.config_bytes(spec)
    assert peak <= estimate <= 20 * peak, (peak, estimate)


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_cgroup_v2_limits_on_an_ancestor_apply(tmp_path):
    """A Kubernetes pod sets its limits on the pod's cgroup, the container runs in a child of it."""
    proc = tmp_path / "cgroup"
    proc.write_text("0::/pod/ctr\n")
    _tree(tmp_path / "fs", {"cpu.max": "max 100000\n", "memory.max": "max\n", "pod/cpu.max": "150000 100000\n",
                            "pod/memory.max": "2147483648\n", "pod/ctr/cpu.max": "max 100000\n",
                            "pod/ctr/memory.max": "max\n", "pod/ctr/memory.current": "1048576\n"})
    assert resources._cpu_quota(tmp_path / "fs", proc) == 1.5
    assert resources._memory_limit(tmp_path / "fs", proc) == (2 << 30, 1 << 20)


def test_cgroup_v1_limits_are_read(tmp_path):
    """Hosts with cgroup v1 (one tree per controller) write their limits in other files."""
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/job\n2:cpu,cpuacct:/job\n0::/\n")
    _tree(tmp_path / "fs", {"memory/memory.limit_in_bytes": "9223372036854771712\n",
                            "memory/job/memory.limit_in_bytes": "1073741824\n", "memory/job/memory.usage_in_bytes": "4096\n",
                            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/job/cpu.cfs_quota_us": "50000\n",
                            "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"})
    assert resources._cpu_quota(tmp_path / "fs", proc) == 0.5
    assert resources._memory_limit(tmp_path / "fs", proc) == (1 << 30, 4096)
    proc.write_text("4:memory:/\n2:cpu,cpuacct:/\n0::/\n")  # no limit anywhere
    assert resources._cpu_quota(tmp_path / "fs", proc) is None and resources._memory_limit(tmp_path / "fs", proc)[0] is None


def test_jobs_are_bounded_by_cores_and_memory(monkeypatch):
    jobs, note = resources.worker_count(64, 0)
    assert jobs <= resources.usable_cores() and "reduced" in note
    monkeypatch.setattr(resources, "available_memory", lambda: 3 * resources.WORKER_BASELINE_BYTES // 2)
    monkeypatch.setattr(resources, "usable_cores", lambda: 64)
    assert resources.worker_count(8, 0)[0] == 1
    assert resources.worker_count(1, 0) == (1, None)


@pytest.mark.slow
def test_too_many_jobs_are_reduced_and_said(tmp_path):
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--db", "r.db", "--jobs", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--jobs 64 reduced to" in proc.stderr and "usable core" in proc.stderr


@pytest.mark.slow
def test_the_timeout_counts_only_the_backends_own_work():
    """deploykit's float64 reference of this layer takes longer than the timeout; ORT does not."""
    spec = ConvTransposeSpec((1, 256, 48, 48), 128, (4, 4), strides=2, pads=1)
    results = []
    run_tasks([Task(spec, "ort-cpu")], results.append, timeout=1.0, options=WorkerOptions(preload=("ort-cpu",)))
    [result] = results
    assert result.verdict == "pass", result.reason
    assert result.duration_ms < 1000


@pytest.mark.slow
def test_a_worker_that_cannot_start_is_no_verdict(tmp_path, fault_backends):
    proc = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "nostart", "--db", "r.db", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "fail to start" in lines[0] and "--resume" in lines[0], proc.stderr
    assert _count(tmp_path / "r.db") == 0, "a start-up failure must never be stored as the backend's crash"


@pytest.mark.slow
def test_a_sigkilled_worker_is_retried_once_before_crash(fault_backends):
    spec = ConvTransposeSpec((1, 2, 4), 2, (2,), strides=2)
    results = []
    run_tasks([Task(spec, "killed"), Task(spec, "reference")], results.append)
    by = {r.backend: r for r in results}
    assert by["killed"].verdict == "crash" and "SIGKILL twice" in by["killed"].reason
    assert by["reference"].verdict == "pass" and len(results) == 2


# ----- interruptions --------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _all_gone(pids: list[int], wait_s: float = 10.0) -> bool:
    """True once none of `pids` exists (the resource tracker leaves a moment after the parent)."""
    deadline = time.monotonic() + wait_s
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def _start_slow_run(db: Path, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "deploykit", "conformance", "run", "--matrix", "smoke",
               "--backends", "slowish", "--db", str(db), "--jobs", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while _count(db) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_says_how_to_resume_and_resumes(tmp_path, fault_backends, signum):
    db = tmp_path / "r.db"
    proc = _start_slow_run(db, tmp_path)
    workers = _children(proc.pid)
    # A terminal's Ctrl-C reaches the whole process group; `kill` and CI runners signal the parent.
    os.killpg(proc.pid, signum) if signum == signal.SIGINT else proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], stderr
    assert workers and _all_gone(workers)
    report = deploykit("conformance", "report", "--db", str(db), "--format", "json")
    assert json.loads(report.stdout)["run"]["complete"] is False
    resumed = deploykit("conformance", "run", "--resume", "--db", str(db), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _count(db) == 31


@pytest.mark.slow
def test_an_orphaned_worker_exits_quietly(tmp_path, fault_backends):
    db = tmp_path / "r.db"
    proc = _start_slow_run(db, tmp_path)
    workers = _children(proc.pid)
    proc.kill()  # the parent alone dies, mid-task
    _, stderr = proc.communicate(timeout=30)
    assert workers and _all_gone(workers)
    assert "Traceback" not in stderr and "Error" not in stderr, stderr


# ----- resume ---------------------------------------------------------------------------------
def _killed_run(tmp_path: Path, matrix: str = "smoke", backends: str = "slowish") -> Path:
    """A run of `matrix` killed by SIGKILL after a few results."""
    db = tmp_path / "r.db"
    command = [sys.executable, "-m", "deploykit", "conformance", "run", "--matrix", matrix, "--backends", backends,
               "--db", str(db)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while _count(db) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return db


@pytest.mark.slow
def test_resume_refuses_a_changed_matrix(tmp_path, fault_backends):
    matrix = tmp_path / "m.yaml"
    cases = [f"  - {{name: c{i}, input_shape: [1, 2, {i + 3}], out_channels: 2, kernel_shape: 2}}" for i in range(20)]
    matrix.write_text("cases:\n" + "\n".join(cases) + "\n")
    db = _killed_run(tmp_path, str(matrix))
    before = _count(db)
    matrix.write_text("defaults: {dtype: float16}\ncases:\n" + "\n".join(cases) + "\n")
    proc = deploykit("conformance", "run", "--resume", "--db", str(db), cwd=tmp_path)
    assert_usage_error(proc, "changed since run 1 started", "drop --resume")
    assert _count(db) == before


@pytest.mark.slow
def test_resume_refuses_options_that_contradict_the_run(tmp_path, fault_backends):
    db = _killed_run(tmp_path)
    for args, needle in [(["--backends", "reference"], "--backends"), (["--matrix", "default"], "--matrix"),
                         (["--dtypes", "float16"], "with no --dtypes (the default), not --dtypes float16"),
                         (["--atol", "0.1"], "--atol/--rtol")]:
        assert_usage_error(deploykit("conformance", "run", "--resume", "--db", str(db), *args, cwd=tmp_path), needle)
    same = deploykit("conformance", "run", "--resume", "--db", str(db), "--backends", "slowish", "--matrix", "smoke",
                     cwd=tmp_path)
    assert same.returncode == 0, same.stderr


@pytest.mark.slow
def test_resume_refuses_a_run_that_is_still_running(tmp_path, fault_backends):
    db = tmp_path / "r.db"
    proc = _start_slow_run(db, tmp_path)
    try:
        taken = deploykit("conformance", "run", "--resume", "--db", str(db), cwd=tmp_path)
        assert_usage_error(taken, "run 1", "still running in process")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


@pytest.mark.slow
def test_report_of_an_unfinished_run_says_so_in_every_format(tmp_path, fault_backends):
    db = _killed_run(tmp_path)
    table = deploykit("conformance", "report", "--db", str(db))
    assert table.returncode == 0 and "INCOMPLETE: run 1 recorded" in table.stdout
    md = deploykit("conformance", "report", "--db", str(db), "--format", "md")
    assert "**INCOMPLETE: run 1 recorded" in md.stdout and "✅" not in md.stdout and "⚠️ incomplete run" in md.stdout
    run = json.loads(deploykit("conformance", "report", "--db", str(db), "--format", "json").stdout)["run"]
    assert run["complete"] is False and run["status"] == "unfinished" and 0 < run["recorded"] < run["planned"] == 31


# ----- the database ---------------------------------------------------------------------------
@pytest.mark.slow
def test_another_programs_sqlite_file_is_refused_untouched(tmp_path):
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE users (name TEXT)")
        connection.execute("INSERT INTO users VALUES ('ada')")
    connection.close()
    before = _digest(db)
    for args in (["conformance", "run", "--db", str(db)], ["conformance", "report", "--db", str(db)]):
        assert_usage_error(deploykit(*args, cwd=tmp_path), "app.db is not a deploykit results database", "users")
    assert _digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal, no -shm


@pytest.mark.slow
def test_db_path_problems_are_named(tmp_path):
    assert_usage_error(deploykit("conformance", "run", "--db", "nodir/x.db", cwd=tmp_path), "folder nodir does not exist")
    (tmp_path / "ro.db").write_bytes(b"")
    (tmp_path / "ro.db").chmod(0o444)
    proc = subprocess.run(without_root_overrides([sys.executable, "-m", "deploykit", "conformance", "run", "--db", "ro.db"]),
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert_usage_error(proc, "ro.db is read-only")


@pytest.mark.slow
def test_a_finished_database_reads_in_a_read_only_folder(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    run = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "reference", "--db", "r.db", cwd=folder)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["r.db"]  # one self-contained file
    folder.chmod(0o555)
    try:
        command = [sys.executable, "-m", "deploykit", "conformance", "report", "--db", "r.db", "--format", "json"]
        proc = subprocess.run(without_root_overrides(command), capture_output=True, text=True, cwd=folder,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        another = subprocess.run(without_root_overrides([sys.executable, "-m", "deploykit", "conformance", "run", "--db", "r.db"]),
                                 capture_output=True, text=True, cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        folder.chmod(0o755)
    assert_usage_error(another, "folder . is read-only")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run"]["recorded"] == 31


def _back_to_schema_1(db: Path) -> None:
    """Rewrite a database in the first layout: no owner, no precision (nor in the key), no
    accumulation columns; its run was started with `precision: tf32`."""
    added = {"precision", "accumulation", "float32_sum_ratio"}
    with sqlite3.connect(db) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(results)") if row[1] not in added]
        kinds = {row[1]: row[2] for row in connection.execute("PRAGMA table_info(results)")}
        connection.execute("ALTER TABLE results RENAME TO new_results")
        connection.execute(f"CREATE TABLE results ({', '.join(f'{c} {kinds[c]}' for c in columns)},"
                           " PRIMARY KEY (run_id, config_id, expect, backend))")
        connection.execute(f"INSERT INTO results SELECT {', '.join(columns)} FROM new_results")
        connection.execute("DROP TABLE new_results")
        connection.execute("ALTER TABLE runs DROP COLUMN owner")
        connection.execute("ALTER TABLE runs DROP COLUMN known_divergences")
        connection.execute("UPDATE runs SET parameters = json_set(json_remove(parameters, '$.precisions'), '$.precision', 'tf32')")
        connection.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    connection.close()


@pytest.mark.slow
def test_an_older_schema_is_migrated_and_a_newer_one_refused(tmp_path):
    db = tmp_path / "r.db"
    assert deploykit("conformance", "run", "--matrix", "smoke", "--backends", "reference", "--db", str(db)).returncode == 0
    _back_to_schema_1(db)
    old = deploykit("conformance", "report", "--db", str(db), "--format", "json")
    assert old.returncode == 0 and len(json.loads(old.stdout)["results"]) == 31
    again = deploykit("conformance", "run", "--matrix", "smoke", "--backends", "reference", "--db", str(db))
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(db) as connection:
        version = connection.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        by_run = dict(connection.execute("SELECT precision, COUNT(*) FROM results GROUP BY precision").fetchall())
        key = [row[1] for row in connection.execute("PRAGMA table_info(results)") if row[5]]
    assert version == str(SCHEMA_VERSION) and "precision" in key
    assert by_run == {"tf32": 31, "fp32": 31}  # the old run's rows got the precision it was started with
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    connection.close()
    assert_usage_error(deploykit("conformance", "report", "--db", str(db)), "schema version 99", "upgrade deploykit")


def _run_with_file_limit(db: Path, kilobytes: int) -> subprocess.CompletedProcess:
    """`ulimit -f` makes every write past the size fail, as a full disk does."""
    command = f"ulimit -f {kilobytes} && exec {sys.executable} -m deploykit conformance run --matrix smoke --backends reference --db {db}"
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=db.parent,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=240)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.slow
def test_a_disk_full_before_the_run_starts_is_one_line(tmp_path):
    line = _one_error_line(_run_with_file_limit(tmp_path / "r.db", 24))
    assert "cannot write" in line and "run again" in line and "--resume" not in line


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_exit_2_and_an_intact_database(tmp_path):
    db = tmp_path / "r.db"
    line = _one_error_line(_run_with_file_limit(db, 96))
    assert "cannot write results" in line and "--resume" in line
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    partial = _count(db)
    assert 0 < partial < 31
    resumed = deploykit("conformance", "run", "--resume", "--db", str(db), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _count(db) == 31


def test_liveness_of_a_run_owner():
    import os as _os
    import socket
    import time as _time

    from deploykit.execution import liveness
    now = _time.time()
    parent = {"host": socket.gethostname(), "pid": _os.getppid(), "start": liveness._start_time(_os.getppid())}
    assert liveness.still_running(None, now, 120) is None
    assert "still running in process" in liveness.still_running(parent, now, 120)
    assert liveness.still_running({**parent, "start": "0"}, now, 120) is None  # a recycled pid is not the owner
    remote = {"host": "another-host", "pid": 1, "start": "1"}
    assert "may still be running" in liveness.still_running(remote, now - 30, 120)
    # a remote task may be quiet for as long as deploykit's own work limit, beyond the backend's timeout
    assert "may still be running" in liveness.still_running(remote, now - 300, 120)
    assert liveness.still_running(remote, now - 3600, 120) is None
