"""`deploykit conformance run`: matrix -> tasks -> isolated workers -> store -> summary."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deploykit import backends as registry
from deploykit import environment
from deploykit.errors import UsageError
from deploykit.execute import Result
from deploykit.harness import Task, WorkerOptions, run_tasks
from deploykit.matrix import load as load_matrix
from deploykit.metrics import SKIPPED, Tolerance
from deploykit.store import Store


DEFAULT_TIMEOUT = 120.0


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
    precision: str = "fp32"


def is_failure(result: Result) -> bool:
    """Counts against the exit code: any non-pass that is neither skipped nor a known divergence."""
    return result.verdict != "pass" and result.verdict not in SKIPPED and not result.known_divergence


def _parameters(request: RunRequest) -> dict:
    """What a run is asked to do, stored so `--resume` can finish it from any directory."""
    matrix = request.matrix
    if Path(matrix).suffix in (".yaml", ".yml") or Path(matrix).exists():
        matrix = str(Path(matrix).resolve())
    return {
        "matrix": matrix,
        "backends": request.backends,
        "dtypes": request.dtypes,
        "tolerance": None if request.tolerance is None else vars(request.tolerance),
        "latency": request.latency,
        "precision": request.precision,
        "timeout": request.timeout,
        "jobs": request.jobs,
        "threads_per_worker": _threads_per_worker(request.jobs),
    }


def _threads_per_worker(jobs: int) -> int:
    """Intra-op threads each worker gets, so parallel workers do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


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
        precision=parameters.get("precision", "fp32"),
    )


def run(request: RunRequest, console: Console) -> tuple[int, list[Result], dict]:
    """Execute (or resume) a run; returns (run_id, all its results, environment)."""
    store = Store(request.db)
    try:
        if request.resume:
            previous = store.latest_run(unfinished_only=True)
            if previous is None:
                raise UsageError(f"nothing to resume in {request.db}: its last run is complete (drop --resume)")
            request = _request_from_run(request, previous.parameters)
            run_id, env = previous.run_id, previous.environment
        matrix = load_matrix(request.matrix, request.dtypes)
        for name in request.backends:
            registry.get(name)  # unknown names fail here, before any work
        tasks = [Task(spec, backend) for spec in matrix.specs for backend in request.backends]
        if not request.resume:
            env = environment.collect()
            run_id = store.start_run(matrix.name, _parameters(request), env, len(tasks))
        done = store.done(run_id)
        todo = [t for t in tasks if (t.spec.id, t.spec.expect, t.backend) not in done]
        options = WorkerOptions(
            tolerance=request.tolerance,
            threads=_threads_per_worker(request.jobs),
            latency=request.latency,
            precision=request.precision,
            preload=tuple(request.backends),
        )
        progress = Progress(
            TextColumn("[bold]conformance"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        with progress:
            bar = progress.add_task("", total=len(tasks), completed=len(tasks) - len(todo))

            def record(result: Result) -> None:
                store.add(run_id, result)
                progress.update(bar, advance=1, description=f"{result.label} on {result.backend}")

            timeout = request.timeout if request.timeout is not None else DEFAULT_TIMEOUT
            run_tasks(todo, record, jobs=request.jobs, timeout=timeout, options=options)
        store.finish_run(run_id)
        return run_id, store.results(run_id), env
    finally:
        store.close()
