"""Isolated workers: a backend that segfaults or hangs costs one config, never the run.

Each worker is a long-lived `spawn`ed process that keeps its imported runtimes and prepared
cases between tasks (so a smoke run does not pay torch's import per task).  The parent hands
out one (config, backend) task at a time; when a worker dies the task is recorded as `crash`
with the signal, when it overruns `timeout` it is killed and recorded as `timeout`, and in both
cases a fresh worker takes its place.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable, Iterable

from deploykit.execute import Executor, Result
from deploykit.metrics import Tolerance
from deploykit.spec import ConvTransposeSpec


READY = "ready"
#: How long a fresh worker may take to import its runtimes before it counts as broken.
STARTUP_LIMIT_S = 120.0


@dataclass(frozen=True)
class Task:
    spec: ConvTransposeSpec
    backend: str


@dataclass(frozen=True)
class WorkerOptions:
    tolerance: Tolerance | None = None
    threads: int | None = None
    latency: dict | None = None  # timing options when the run measures latency
    precision: str = "fp32"
    #: backends a worker loads before it says it is ready, so imports never count against --timeout
    preload: tuple[str, ...] = ()


def _worker_main(conn: Connection, options: WorkerOptions) -> None:
    """Worker loop: receive (spec dict, backend) tuples, send Result dicts back; None stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if options.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(options.threads))
    executor = Executor(
        tolerance=options.tolerance, threads=options.threads, latency=options.latency, precision=options.precision
    )
    for name in options.preload:
        try:
            executor.backend(name)
        except Exception:  # noqa: BLE001 - the task itself will report the problem
            pass
    conn.send(READY)
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent died (even by SIGKILL): nothing left to answer to
            return
        if message is None:
            return
        spec_dict, backend = message
        spec = ConvTransposeSpec.from_dict(spec_dict)
        conn.send(executor.run(spec, backend).as_dict())


class _Worker:
    def __init__(self, context: mp.context.BaseContext, options: WorkerOptions) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, options), daemon=True)
        self.process.start()
        child.close()
        self.task: Task | None = None
        self.ready = False
        self.started = time.monotonic()  # start-up time until ready, then the task's time

    def submit(self, task: Task) -> None:
        self.task = task
        self.started = time.monotonic()
        self.conn.send((task.spec.to_dict(), task.backend))

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=2)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


def _failure(task: Task, verdict: str, reason: str, elapsed: float) -> Result:
    result = Result.for_spec(task.spec, task.backend, verdict, reason)
    result.duration_ms = elapsed * 1e3
    return result


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"worker killed by signal {-exitcode}"
    return f"worker exited with code {exitcode}"


def _starting(worker: _Worker, ready: list, now: float, context, options: WorkerOptions, pending: deque, on_result) -> _Worker:
    """Advance a worker that has not said READY yet; a broken start costs the next task."""
    if worker.conn in ready:
        try:
            if worker.conn.recv() == READY:
                worker.ready = True
                return worker
        except (EOFError, OSError):
            pass
    elif now - worker.started <= STARTUP_LIMIT_S and worker.process.is_alive():
        return worker
    worker.process.join(timeout=5)
    reason = f"worker failed to start ({_death_reason(worker.process.exitcode)})"
    worker.kill()
    if pending:
        on_result(_failure(pending.popleft(), "crash", reason, now - worker.started))
    return _Worker(context, options)


def run_tasks(
    tasks: Iterable[Task],
    on_result: Callable[[Result], None],
    *,
    jobs: int = 1,
    timeout: float = 120.0,
    options: WorkerOptions = WorkerOptions(),
) -> None:
    """Run every task in isolated workers, calling `on_result` in the parent as each finishes."""
    context = mp.get_context("spawn")
    pending = deque(tasks)
    jobs = max(1, min(jobs, len(pending) or 1))
    workers = [_Worker(context, options) for _ in range(jobs)]
    try:
        while pending or any(w.task for w in workers):
            for worker in workers:
                if worker.ready and worker.task is None and pending:
                    worker.submit(pending.popleft())
            waiting = [w for w in workers if w.task is not None or (not w.ready and pending)]
            ready = wait([w.conn for w in waiting], timeout=0.2)
            now = time.monotonic()
            for index, worker in enumerate(workers):
                if not worker.ready:
                    workers[index] = _starting(worker, ready, now, context, options, pending, on_result)
                    continue
                task = worker.task
                if task is None:
                    continue
                elapsed = now - worker.started
                if worker.conn in ready:
                    try:
                        result = Result(**worker.conn.recv())
                    except (EOFError, OSError):
                        worker.process.join(timeout=5)
                        result = _failure(task, "crash", _death_reason(worker.process.exitcode), elapsed)
                        worker.kill()
                        workers[index] = _Worker(context, options)
                    else:
                        worker.task = None
                    on_result(result)
                    continue
                if elapsed > timeout:
                    worker.kill()
                    workers[index] = _Worker(context, options)
                    on_result(_failure(task, "timeout", f"no answer within {timeout:g} s; worker killed", elapsed))
    finally:
        for worker in workers:
            worker.stop()
