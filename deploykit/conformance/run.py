"""`deploykit conformance run`: matrix -> tasks -> isolated workers -> store -> summary.

Everything that can be checked is checked before a worker starts or the database is touched:
the matrix, the backends, each config's memory against the budget, and for `--resume` that the
run is not live elsewhere, that its matrix has not changed, and that no option given on the
command line contradicts the run being finished.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deploykit import backends as registry
from deploykit.conformance.matrix import Matrix
from deploykit.conformance.matrix import load as load_matrix
from deploykit.errors import RunAborted, UsageError
from deploykit.execution import liveness, resources
from deploykit.execution.harness import Task, WorkerOptions, run_tasks
from deploykit.op.judging import Tolerance
from deploykit.report.escape import one_line
from deploykit.results import dbcheck, divergences, environment
from deploykit.results.parameters import MAX_SHARDS, as_option, flag, same
from deploykit.results.result import Result
from deploykit.results.store import Run, Store

DEFAULT_TIMEOUT = 120.0
#: Options a resumed run takes from the run itself; giving a different one is a usage error.
RESUME_FIXED = ("matrix", "backends", "dtypes", "tolerance", "latency", "precisions", "shard")


@dataclass
class RunRequest:
    matrix: str
    backends: list[str]
    dtypes: list[str] | None = None
    db: Path = Path("deploykit-results.db")
    jobs: int = 1
    resume: bool = False
    timeout: float | None = None  # None: 120 s, or what a resumed run started with
    tolerance: Tolerance | None = None
    latency: dict | None = None
    #: build precisions; every (config, backend) runs at each (a backend that cannot honour one says so)
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    max_memory: int | None = None  # per-config budget in bytes; None: resources.default_budget()
    #: (K, N): run only shard K of N of the tasks (`--shard K/N`); `deploykit conformance merge` joins them
    shard: tuple[int, int] | None = None
    #: the RESUME_FIXED options the user gave explicitly (checked against a resumed run)
    explicit: set[str] = field(default_factory=set)


@dataclass
class RunOutcome:
    run: Run
    results: list[Result]
    environment: dict
    notes: list[str]  # one line each: what deploykit decided for the user (e.g. fewer workers)


def matrix_hash(matrix: Matrix) -> str:
    """What the run's tasks are made of: every config's id, expectation and label."""
    content = sorted((spec.id, spec.expect, spec.label) for spec in matrix.specs)
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:16]


def _matrix_reference(name_or_path: str) -> str:
    """A built-in name stays a name; a file becomes an absolute path, so --resume works anywhere."""
    if Path(name_or_path).suffix in (".yaml", ".yml") or Path(name_or_path).exists():
        return str(Path(name_or_path).resolve())
    return name_or_path


def _parameters(request: RunRequest, matrix: Matrix, jobs: int) -> dict:
    """What a run is asked to do, stored so `--resume` can finish it from any directory."""
    return {
        "matrix": _matrix_reference(request.matrix),
        "matrix_hash": matrix_hash(matrix),
        "backends": request.backends,
        "dtypes": request.dtypes,
        "tolerance": None if request.tolerance is None else vars(request.tolerance),
        "latency": request.latency,
        "precisions": request.precisions,
        "timeout": request.timeout,
        "jobs": jobs,
        "threads_per_worker": _threads_per_worker(jobs),
        "shard": list(request.shard) if request.shard else None,
        "planned_total": len(matrix.specs) * len(request.backends) * len(request.precisions),
    }


def _threads_per_worker(jobs: int) -> int:
    """Intra-op threads each worker gets, so parallel workers do not oversubscribe the cores."""
    return max(1, resources.usable_cores() // max(1, jobs))


def _check_resume_options(request: RunRequest, stored: dict) -> None:
    """An option given with --resume must agree with the run's, never be silently ignored."""
    given = {
        "matrix": _matrix_reference(request.matrix),
        "backends": request.backends,
        "dtypes": request.dtypes,
        "tolerance": None if request.tolerance is None else vars(request.tolerance),
        "latency": request.latency,
        "precisions": request.precisions,
        "shard": list(request.shard) if request.shard else None,
    }
    for name in RESUME_FIXED:
        if name in request.explicit and not same(name, given[name], stored.get(name)):
            raise UsageError(
                f"--resume finishes the run as it started, with {as_option(name, stored.get(name))}, not"
                f" {as_option(name, given[name])}; drop {flag(name)}, or drop --resume to start a new run"
            )


def _request_from_run(request: RunRequest, parameters: dict) -> RunRequest:
    """A resumed run keeps the matrix, backends, dtypes and tolerance it started with."""
    tolerance = parameters.get("tolerance")
    return RunRequest(
        matrix=parameters["matrix"],
        backends=list(parameters["backends"]),
        dtypes=parameters.get("dtypes"),
        db=request.db,
        jobs=request.jobs,
        resume=True,
        timeout=request.timeout if request.timeout is not None else parameters.get("timeout"),
        tolerance=Tolerance(**tolerance) if tolerance else None,
        latency=parameters.get("latency"),
        precisions=_stored_precisions(parameters),
        max_memory=request.max_memory,
        shard=tuple(parameters["shard"]) if parameters.get("shard") else None,
    )


def _stored_precisions(parameters: dict) -> list[str]:
    """A run's precisions (runs before schema 3 stored one `precision`)."""
    return list(parameters.get("precisions") or [parameters.get("precision", "fp32")])


def _load_checked(request: RunRequest) -> tuple[Matrix, int]:
    """The matrix, its backends known and every config within the memory budget (largest need)."""
    matrix = load_matrix(request.matrix, request.dtypes)
    for name in request.backends:
        registry.get(name)  # unknown names fail here, before any work
    budget = request.max_memory or resources.default_budget()
    return matrix, resources.check_budget(matrix.specs, budget)


def _resumable(store: Store, request: RunRequest) -> Run:
    previous = store.latest_run(unfinished_only=True)
    if previous is None:
        raise UsageError(f"nothing to resume in {request.db}: its last run is complete (drop --resume)")
    if previous.parameters.get("kind") == "fuzz":
        raise UsageError(f"run {previous.run_id} in {request.db} is a fuzz run: finish it with `deploykit conformance fuzz --resume`")
    if previous.parameters.get("kind") == "judge":
        raise UsageError(f"run {previous.run_id} in {request.db} judged outputs made elsewhere and has cases without an answer:"
                         " add them and run `deploykit conformance judge` again")
    dbcheck.checked_parameters(previous, request.db, "run")  # what the run is rebuilt from, typed as deploykit writes it
    timeout = request.timeout or previous.parameters.get("timeout") or DEFAULT_TIMEOUT
    live = liveness.still_running(previous.owner, store.last_activity(previous), timeout)
    if live:
        raise UsageError(f"run {previous.run_id} in {request.db} {live}; wait for it, or stop it first")
    _check_resume_options(request, {**previous.parameters, "precisions": _stored_precisions(previous.parameters)})
    return previous


def _tasks(matrix: Matrix, backends: list[str], precisions: list[str], shard: tuple[int, int] | None = None) -> list[Task]:
    tasks = [Task(spec, backend, precision) for spec in matrix.specs for backend in backends for precision in precisions]
    return tasks if shard is None else shard_of(tasks, *shard)


def shard_of(tasks: list[Task], index: int, count: int) -> list[Task]:
    """Shard `index` of `count` (1-based): a deterministic, balanced split.

    Tasks are ordered by a hash of their whole key (config id, expectation, backend, precision), so
    the order (and the split) depends only on what is run, never on the machine or the matrix file's
    layout; dealing them out in turn gives every shard the same number of tasks, to within one.
    Hashing the whole key, not sorting it, mixes the backends: sorted keys dealt in turn would give
    each shard the same backends for every config when the backends divide the shard count, and a
    slow backend would make its shard the slowest.
    """
    check_shard(index, count, len(tasks))
    ordered = sorted(tasks, key=lambda task: hashlib.sha256(repr(task.key).encode()).hexdigest())
    return [task for position, task in enumerate(ordered) if position % count == index - 1]


def parse_shard(text: str, option: str = "--shard") -> tuple[int, int]:
    """`K/N` as (K, N): whole numbers, 1 <= K <= N <= MAX_SHARDS, checked before any work."""
    found = re.fullmatch(r"\s*([0-9]{1,6})\s*/\s*([0-9]{1,6})\s*", text)  # ASCII digits: `int` refuses some others
    if not found:
        raise UsageError(f"{option} {text!r} must be K/N, two whole numbers with 1 <= K <= N <= {MAX_SHARDS:,}, e.g. 2/3")
    index, count = int(found[1]), int(found[2])
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(f"{option} {text!r}: N must be from 1 to {MAX_SHARDS:,}, e.g. 2/3")
    if not 1 <= index <= count:
        raise UsageError(f"{option} {text!r}: K must be from 1 to N ({count}), e.g. 2/3")
    return index, count


def check_shard(index: int, count: int, tasks: int) -> None:
    """A split into more shards than there are tasks would leave a shard with nothing to run."""
    if count > tasks:
        what = "is only 1 task" if tasks == 1 else f"are only {tasks} tasks"
        raise UsageError(f"--shard '{index}/{count}': there {what} to split; N must be at most {tasks}")


def _open_resumed(request: RunRequest) -> tuple[Store, RunRequest, Matrix, int, Run]:
    """The unfinished run to finish, with every --resume check passed, now owned by this process."""
    if not request.db.exists():
        raise UsageError(f"nothing to resume: {request.db} does not exist (drop --resume to start a run)")
    store = Store(request.db)
    try:
        previous = _resumable(store, request)
        request = _request_from_run(request, previous.parameters)
        matrix, largest = _load_checked(request)
        if matrix_hash(matrix) != previous.parameters.get("matrix_hash"):
            raise UsageError(
                f"matrix {request.matrix} changed since run {previous.run_id} started, so its results would"
                " mix two matrices; drop --resume to start a new run"
            )
        store.take_over(previous.run_id, liveness.current_owner())
    except BaseException:
        store.close()
        raise
    return store, request, matrix, largest, previous


def run(request: RunRequest, console: Console) -> RunOutcome:
    """Execute (or resume) a run; nothing is written before every check has passed."""
    previous = None
    if request.resume:
        store, request, matrix, largest, previous = _open_resumed(request)
    else:
        matrix, largest = _load_checked(request)
        _tasks(matrix, request.backends, request.precisions, request.shard)  # a shard beyond the tasks: before the database
        store = Store(request.db)
    try:
        jobs, note = resources.worker_count(request.jobs, largest)
        tasks = _tasks(matrix, request.backends, request.precisions, request.shard)
        if previous is None:
            env = environment.collect()
            parameters = _parameters(request, matrix, jobs)
            run_id = store.start_run(matrix.name, parameters, env, len(tasks), liveness.current_owner(),
                                     divergences.snapshot(divergences.load()))
        else:
            run_id, env = previous.run_id, previous.environment
        _execute(store, run_id, tasks, request, jobs, console)
        store.finish_run(run_id)
        return RunOutcome(store.started_run(run_id), store.results(run_id), env, [note] if note else [])
    except sqlite3.Error as error:  # a full disk or a file size limit: SQLite keeps the file intact
        raise RunAborted(f"cannot write results to {request.db}: {error}", resumable=previous is not None or _started(store)) from None
    finally:
        store.close()


def _started(store: Store) -> bool:
    """Whether a run row exists to resume (a disk can fill up before the first one is written)."""
    try:
        return store.latest_run(unfinished_only=True) is not None
    except sqlite3.Error:
        return False


def _execute(store: Store, run_id: int, tasks: list[Task], request: RunRequest, jobs: int, console: Console) -> None:
    done = store.done(run_id)
    todo = [t for t in tasks if t.key not in done]
    options = WorkerOptions(
        tolerance=request.tolerance,
        threads=_threads_per_worker(jobs),
        latency=request.latency,
        preload=tuple(request.backends),
    )
    progress = Progress(
        TextColumn("[bold]conformance"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}", markup=False), console=console, transient=True, disable=not console.is_terminal,
    )
    with progress:
        bar = progress.add_task("", total=len(tasks), completed=len(tasks) - len(todo))

        def record(result: Result) -> None:
            store.add(run_id, result)
            progress.update(bar, advance=1, description=one_line(f"{result.label} on {result.backend}"))  # a label is data

        timeout = request.timeout if request.timeout is not None else DEFAULT_TIMEOUT
        run_tasks(todo, record, jobs=jobs, timeout=timeout, options=options)
