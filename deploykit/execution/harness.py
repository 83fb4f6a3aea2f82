"""Isolated workers: a backend that segfaults or hangs costs one config, never the run.

Each worker is a long-lived `spawn`ed process that keeps its imported runtimes and prepared
cases between tasks (so a smoke run does not pay torch's import per task).  The parent hands out
one (config, backend) task at a time.  A task has three phases, and only the middle one is the
backend's: the worker prepares the case (deploykit's float64 reference), says "backend" and runs
the backend (session creation, inference, timing), then says "judging" and computes the bound and
the verdict.  `--timeout` counts the backend phase only; deploykit's own phases get their own,
generous limit.

What becomes a verdict and what does not:
- the worker dies while the backend runs: `crash` with the signal.  A SIGKILL the parent did not
  send (the kernel's out-of-memory killer sends it) is retried once in a fresh worker first;
- the backend overruns the timeout: the worker is killed, `timeout`;
- a worker that fails to start, or deploykit's own preparation failing, dying or overrunning, is
  not the backend's doing: no verdict is recorded and the run stops with `RunAborted` (resumable).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import tempfile
import time
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable, Iterable

from deploykit.errors import RunAborted
from deploykit.execution.execute import Executor, one_line
from deploykit.execution.isolation import ISOLATED, last_message
from deploykit.op.judging import Tolerance
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results import divergences
from deploykit.results.result import Result
from deploykit.vocabulary import Verdict

READY, PHASE, RESULT, FAILED = "ready", "phase", "result", "failed"
BACKEND = "backend"
#: How long a fresh worker may take to import its runtimes before it counts as broken.
STARTUP_LIMIT_S = 120.0
#: Consecutive worker start-up failures before the run stops.
STARTUP_ATTEMPTS = 3
#: deploykit's own phases of one task (the float64 reference, the bound) must finish within this.
OWN_WORK_LIMIT_S = 600.0


@dataclass(frozen=True)
class Task:
    spec: ConvTransposeSpec
    backend: str
    precision: str = "fp32"
    attempt: int = 1

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What identifies its result in a run (the store's key without the run id)."""
        return self.spec.id, self.spec.expect, self.backend, self.precision


@dataclass(frozen=True)
class WorkerOptions:
    tolerance: Tolerance | None = None
    threads: int | None = None
    latency: dict | None = None  # timing options when the run measures latency
    #: backends a worker loads before it says it is ready, so imports never count against --timeout
    preload: tuple[str, ...] = ()


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the parent dies, even mid-task (no orphans)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _send(conn: Connection, message) -> bool:
    """False when the parent is gone: the worker then exits quietly."""
    try:
        conn.send(message)
    except (BrokenPipeError, EOFError, OSError):
        return False
    return True


def _worker_main(conn: Connection, options: WorkerOptions, stderr_path: str) -> None:
    """Worker loop: receive (spec dict, backend), answer each (PHASE, name) then (RESULT, dict); None stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _die_with_parent()
    # A runtime's own output (a Rust panic, C++ logs) goes to a file the parent reads when the
    # worker dies, so the crash verdict can say why, and the user's terminal stays one line per problem.
    os.dup2(os.open(stderr_path, os.O_WRONLY | os.O_APPEND), 2)
    os.environ[ISOLATED] = "1"  # an aborting runtime costs this worker's task: no child needed
    if options.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(options.threads))
    executor = Executor(tolerance=options.tolerance, threads=options.threads, latency=options.latency)
    for name in options.preload:
        try:
            executor.backend(name)
        except Exception:  # noqa: BLE001 - the task itself will report the problem
            pass
    versions = {name: executor.backend(name)[1].version for name in options.preload if name in executor.loaded()}
    if not _send(conn, (READY, versions)):
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent died (even by SIGKILL): nothing left to answer to
            return
        if message is None:
            return
        spec_dict, backend, precision = message
        answer: tuple[str, object]
        try:
            spec = ConvTransposeSpec.from_dict(spec_dict)
            result = executor.run(spec, backend, lambda name: _send(conn, (PHASE, name)), precision)
        except Exception as error:  # noqa: BLE001 - deploykit's own work failed, not the backend
            answer = (FAILED, f"{type(error).__name__}: {one_line(error)}")
        else:
            answer = (RESULT, result.as_dict())
        if not _send(conn, answer):
            return


class _Worker:
    def __init__(self, context: mp.context.SpawnContext, options: WorkerOptions) -> None:
        self.conn, child = context.Pipe()
        handle, self.stderr_path = tempfile.mkstemp(prefix="deploykit-worker-", suffix=".log")
        os.close(handle)
        self.process = context.Process(target=_worker_main, args=(child, options, self.stderr_path), daemon=True)
        self.process.start()
        child.close()
        self.task: Task | None = None
        self.ready = False
        self.phase = "preparing"  # then BACKEND, then "judging"
        self.since = time.monotonic()  # start-up or the current phase began

    @property
    def running(self) -> bool:
        """In the backend's own phase: only then does a death or an overrun concern the backend."""
        return self.phase == BACKEND

    def assigned(self) -> Task:
        """The task this worker was given; asked only of a busy worker."""
        if self.task is None:
            raise RuntimeError("the worker has no task")
        return self.task

    def submit(self, task: Task) -> None:
        self.task, self.phase, self.since = task, "preparing", time.monotonic()
        self.conn.send((task.spec.to_dict(), task.backend, task.precision))

    def death_reason(self) -> str:
        """How the worker died, with the runtime's last words (a panic's location and message)."""
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                reason = f"worker killed by {signal.Signals(-code).name}"
            except ValueError:
                reason = f"worker killed by signal {-code}"
        else:
            reason = f"worker exited with code {code}"
        try:
            words = last_message(Path(self.stderr_path).read_bytes()[-65536:])
        except OSError:
            words = ""
        return f"{reason}: {one_line(RuntimeError(words))}" if words else reason

    def stop(self) -> None:
        _send(self.conn, None)
        self.process.join(timeout=2)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()
        Path(self.stderr_path).unlink(missing_ok=True)


def _failure(task: Task, verdict: Verdict, reason: str, elapsed: float, known: list[divergences.Divergence],
             version: str | None) -> Result:
    """A verdict the parent gives (the worker died or overran), matched against the known divergences
    like any other: a runtime that is known to abort on a config is `crash`, known."""
    result = Result.for_spec(task.spec, task.backend, verdict, reason, task.precision)
    result.duration_ms = elapsed * 1e3
    result.backend_version = version
    entry = divergences.match(known, task.spec, task.backend, verdict, task.precision, version)
    result.known_divergence = entry.id if entry else None
    return result


class WorkerPool:
    """The parent's side: hand out tasks, watch each worker's phase, turn deaths into verdicts.

    The workers outlive one batch of tasks, so a caller that decides its next tasks from the last
    results (`deploykit conformance fuzz`) pays the runtimes' import once, not once per batch.
    Use it as a context manager; `close()` stops the workers.
    """

    def __init__(self, jobs: int, timeout: float, options: WorkerOptions) -> None:
        self.context = mp.get_context("spawn")
        self.pending: deque[Task] = deque()
        self.on_result: Callable[[Result], None] = lambda result: None
        self.timeout = timeout
        self.options = options
        self.start_failures = 0
        self.known = divergences.load()
        self.versions: dict[str, str | None] = {}  # each backend's version, as the workers probed it
        self.workers = [self._new_worker() for _ in range(max(1, jobs))]

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def _failure(self, task: Task, verdict: Verdict, reason: str, elapsed: float) -> Result:
        return _failure(task, verdict, reason, elapsed, self.known, self.versions.get(task.backend))

    def _new_worker(self) -> _Worker:
        return _Worker(self.context, self.options)

    def _replace(self, index: int) -> _Worker:
        old = self.workers[index]
        old.kill()
        self.workers[index] = self._new_worker()
        return old

    def run(self, tasks: Iterable[Task], on_result: Callable[[Result], None]) -> None:
        """Run every task, calling `on_result` in the parent as each finishes; the workers stay up.

        Any exception (RunAborted, an interrupt) leaves workers in an unknown state: the pool is
        closed then, and cannot be used again."""
        if not self.workers:  # closed: with no worker to take them, the tasks would wait forever
            raise RuntimeError("the worker pool is closed")
        self.pending, self.on_result = deque(tasks), on_result
        try:
            while self.pending or any(w.task for w in self.workers):
                for worker in self.workers:
                    if worker.ready and worker.task is None and self.pending:
                        worker.submit(self.pending.popleft())
                watched = [w.conn for w in self.workers if w.task is not None or not w.ready]
                ready = wait(watched, timeout=0.2)
                now = time.monotonic()
                for index in range(len(self.workers)):
                    self._step(index, ready, now)
        except BaseException:
            self.close()
            raise

    def _step(self, index: int, ready: list, now: float) -> None:
        worker = self.workers[index]
        if not worker.ready:
            self._starting(index, ready, now)
        elif worker.task is None:
            return
        elif worker.conn in ready:
            self._receive(index, now)
        elif worker.running and now - worker.since > self.timeout:
            task = self._replace(index).assigned()
            reason = f"no answer within {self.timeout:g} s; worker killed"
            self.on_result(self._failure(task, "timeout", reason, now - worker.since))
        elif not worker.running and now - worker.since > OWN_WORK_LIMIT_S:
            self._replace(index)
            raise RunAborted(f"deploykit's own {worker.phase} of {worker.assigned().spec.label} took over {OWN_WORK_LIMIT_S:g} s")

    def _starting(self, index: int, ready: list, now: float) -> None:
        """A worker that has not said READY yet; a broken start costs no task, only a retry."""
        worker = self.workers[index]
        if worker.conn in ready:
            try:
                kind, versions = worker.conn.recv()
                if kind == READY:
                    self.versions.update(versions)
                    worker.ready, self.start_failures = True, 0
                    return
            except (EOFError, OSError, TypeError, ValueError):
                pass
        elif now - worker.since <= STARTUP_LIMIT_S and worker.process.is_alive():
            return
        reason = worker.death_reason() if not worker.process.is_alive() else f"no answer within {STARTUP_LIMIT_S:g} s"
        self._replace(index)
        self.start_failures += 1
        if self.start_failures >= STARTUP_ATTEMPTS:
            raise RunAborted(f"worker processes fail to start ({reason}, {self.start_failures} times in a row)")

    def _receive(self, index: int, now: float) -> None:
        worker = self.workers[index]
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._died(index, now)
            return
        kind, payload = message
        if kind == PHASE:
            worker.phase, worker.since = payload, now
            return
        task, worker.task = worker.assigned(), None
        if kind == FAILED:
            what = "judging" if worker.phase == "judging" else "preparation"  # the phase the worker last reported
            raise RunAborted(f"deploykit's own {what} of {task.spec.label} for {task.backend} failed: {payload}")
        self.on_result(Result(**payload))

    def _died(self, index: int, now: float) -> None:
        worker = self.workers[index]
        reason = worker.death_reason()
        task = self._replace(index).assigned()
        if not worker.running:
            raise RunAborted(f"the worker died in deploykit's own {worker.phase} of {task.spec.label} ({reason})")
        killed = worker.process.exitcode == -signal.SIGKILL
        if killed and task.attempt == 1:
            self.pending.appendleft(replace(task, attempt=2))  # most likely the OOM killer: try once more
            return
        if killed:
            reason = reason.replace("SIGKILL", "SIGKILL twice (what the kernel's out-of-memory killer sends)", 1)
        self.on_result(self._failure(task, "crash", reason, now - worker.since))


def run_tasks(
    tasks: Iterable[Task],
    on_result: Callable[[Result], None],
    *,
    jobs: int = 1,
    timeout: float = 120.0,
    options: WorkerOptions = WorkerOptions(),
) -> None:
    """Run every task in isolated workers, calling `on_result` in the parent as each finishes."""
    tasks = list(tasks)
    if not tasks:
        return
    with WorkerPool(min(jobs, len(tasks)), timeout, options) as pool:
        pool.run(tasks, on_result)
