"""`deploykit conformance fuzz`: Hypothesis explores, the harness judges, each class is shrunk.

Two phases, both driven by Hypothesis (its generator and its shrinker; nothing hand-written):
1. explore: the first `--max-examples` configs a seed generates (or as many as half the time
   budget allows), each judged on every fuzzed backend; every non-pass result falls in a class
   (`deploykit.fuzz.classes`).
2. shrink: for each class, NEW ones first, Hypothesis walks the same configs again (the same
   seed generates them in the same order, and they are judged already) to the class's first
   config and shrinks it with "still in this class" as its condition.

Every config runs in the harness's isolated workers (a segfault costs one config) and each result
is stored like a matrix run's, so a fuzz run reports, compares and resumes like any other.

Determinism: with `--max-examples` and no time budget cutting in, the same seed gives the same
configs, the same classes and the same smallest configs, whatever the machine's speed.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console

from deploykit import backends as registry
from deploykit.errors import RunAborted, UsageError
from deploykit.execution import liveness
from deploykit.execution.harness import Task, WorkerOptions, WorkerPool
from deploykit.fuzz.classes import ClassKey, FailureClass, class_of, group
from deploykit.fuzz.strategies import specs
from deploykit.op.spec import DTYPES, ConvTransposeSpec
from deploykit.results import dbcheck, divergences, environment
from deploykit.results.parameters import as_option, flag, same
from deploykit.results.result import Result
from deploykit.results.store import Run, Store

DEFAULT_TIMEOUT = 60.0
#: `--max-examples` when only a time budget is given: time ends the search, not a count
UNBOUNDED_EXAMPLES = 1_000_000
#: Options a resumed fuzz run takes from the run itself; giving a different one is a usage error.
FUZZ_FIXED = ("backends", "dtypes", "seed", "max_examples", "budget")
#: The part of a time budget that explores; the rest shrinks the classes found.
EXPLORE_SHARE = 0.5


@dataclass
class FuzzRequest:
    backends: list[str]
    seed: int = 0
    #: how many configs the seed generates for exploration, each run on every backend (None: the budget decides)
    max_examples: int | None = None
    #: seconds for the whole search, EXPLORE_SHARE of it to explore (None: --max-examples decides)
    budget: float | None = None
    dtypes: list[str] | None = None
    db: Path = Path("deploykit-results.db")
    jobs: int = 1
    timeout: float | None = None
    resume: bool = False
    #: the FUZZ_FIXED options the user gave explicitly (checked against a resumed run)
    explicit: set[str] = field(default_factory=set)


@dataclass
class FuzzOutcome:
    run: Run
    results: list[Result]
    classes: list[FailureClass]
    #: classes Hypothesis shrank to the end (the others are shown with their smallest config seen)
    shrunk: set[ClassKey]
    #: the phases the time budget cut short ("explore", "shrink")
    cut_short: list[str]
    #: configs the exploration walked: `--seed S --max-examples N` walks the same ones anywhere
    explored: int


class OutOfBudget(BaseException):
    """The time budget is spent.  A BaseException, so Hypothesis stops at once instead of taking
    it for a failure of the config it was trying and shrinking that."""


class Stopped(BaseException):
    """The search cannot go on (the store failed, the workers would not start): `error` says why.

    A BaseException, like OutOfBudget: raised inside Hypothesis's search, a plain exception would
    be taken for a failure of the config being tried, and Hypothesis would go on trying others on
    a pool that has stopped.  `fuzz` re-raises `error` once the search has unwound."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Evaluator:
    """Each config on every fuzzed backend, once: run in the worker pool, stored, remembered."""

    def __init__(self, pool: WorkerPool, store: Store, run_id: int, backends: list[str], stored: list[Result],
                 on_config: Callable[[int], None] = lambda count: None) -> None:
        self.pool, self.store, self.run_id, self.backends = pool, store, run_id, backends
        self.deadline = float("inf")
        self.generated = 0  # configs the exploration has walked
        self.on_config = on_config
        self.seen: dict[tuple[str, str], dict[str, Result]] = {}
        for result in stored:
            self.seen.setdefault((result.config_id, result.expect), {})[result.backend] = result

    def results(self, spec: ConvTransposeSpec) -> dict[str, Result]:
        key = (spec.id, spec.expect)
        known = self.seen.setdefault(key, {})
        missing = [name for name in self.backends if name not in known]
        if missing:
            if time.monotonic() > self.deadline:
                raise OutOfBudget
            try:
                self.pool.run([Task(spec, name) for name in missing], self._record(known))
            except Exception as error:  # noqa: BLE001 - told by `fuzz` once Hypothesis has unwound
                raise Stopped(error) from error
            self.on_config(len(self.seen))
        return known

    def _record(self, into: dict[str, Result]) -> Callable[[Result], None]:
        def record(result: Result) -> None:
            self.store.add(self.run_id, result)
            into[result.backend] = result

        return record

    def classes(self, spec: ConvTransposeSpec) -> set[ClassKey]:
        """The failure classes of `spec`'s results, on every backend."""
        keys = (class_of(result) for result in self.results(spec).values())
        return {key for key in keys if key is not None}

    def seen_classes(self) -> set[ClassKey]:
        keys = (class_of(result) for results in self.seen.values() for result in results.values())
        return {key for key in keys if key is not None}


def _settings(max_examples: int, shrink: bool):
    from hypothesis import HealthCheck, Phase, Verbosity, settings

    return settings(
        max_examples=max_examples, database=None, deadline=None, verbosity=Verbosity.quiet,
        phases=[Phase.generate, Phase.shrink] if shrink else [Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def explore(evaluator: Evaluator, dtypes: list[str], seed: int, max_examples: int) -> None:
    """Judge the first `max_examples` configs the seed generates, on every backend.

    `evaluator.generated` counts them as they go (OutOfBudget may end the walk first)."""
    from hypothesis import find
    from hypothesis.errors import NoSuchExample

    def judge(spec: ConvTransposeSpec) -> bool:
        evaluator.results(spec)
        evaluator.generated += 1
        return False

    try:
        find(specs(dtypes), judge, settings=_settings(max_examples, shrink=False), random=random.Random(seed))
    except NoSuchExample:
        pass


def _in_class(evaluator: Evaluator, key: ClassKey) -> Callable[[ConvTransposeSpec], bool]:
    """Hypothesis's condition while shrinking one class: the config still shows class `key`."""
    return lambda spec: key in evaluator.classes(spec)


def shrink_classes(evaluator: Evaluator, dtypes: list[str], seed: int, max_examples: int, shrunk: set[ClassKey]) -> None:
    """Shrink every class seen, one at a time, NEW ones first; add each shrunk class to `shrunk`.

    For each class Hypothesis walks the explored configs again (the same seed generates them in
    the same order, and they are judged already) to the first one in the class, then shrinks it
    with "still in this class" as the condition, so no class is reported with a config that only
    happened to show it while another class was shrunk.  A class first seen while shrinking is
    shrunk too when the walk meets it; otherwise it is reported with the smallest config seen."""
    from hypothesis import find
    from hypothesis.errors import NoSuchExample

    strategy = specs(dtypes)
    tried: set[ClassKey] = set()
    while todo := sorted(evaluator.seen_classes() - tried, key=_priority):
        key = todo[0]
        tried.add(key)
        try:
            find(strategy, _in_class(evaluator, key), settings=_settings(max_examples, shrink=True), random=random.Random(seed))
        except NoSuchExample:
            continue
        shrunk.add(key)


def _priority(key: ClassKey) -> tuple:
    return key.known_divergence is not None, key.backend, key.verdict, key.signature


def _default_dtypes(backends: list[str]) -> list[str]:
    """Every dtype at least one fuzzed backend has a kernel for (float32 first: shrinking's target)."""
    return [d for d in DTYPES if any(d in registry.get(name).capabilities.dtypes for name in backends)]


def _checked(request: FuzzRequest) -> FuzzRequest:
    for name in request.backends:
        registry.get(name)  # unknown names fail here, before any work
    for dtype in request.dtypes or []:
        if dtype not in DTYPES:
            raise UsageError(f"--dtypes: unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if request.max_examples is None and request.budget is None and not request.resume:
        raise UsageError("give --budget SECONDS, --max-examples N, or both")
    return request


def _parameters(request: FuzzRequest, dtypes: list[str]) -> dict:
    return {
        "kind": "fuzz", "backends": request.backends, "dtypes": dtypes, "seed": request.seed,
        "max_examples": request.max_examples, "budget": request.budget, "timeout": request.timeout,
        "jobs": request.jobs,
    }


def _resumed(request: FuzzRequest) -> tuple[Store, Run, FuzzRequest]:
    """The unfinished fuzz run in --db, every check passed, now owned by this process."""
    if not request.db.exists():
        raise UsageError(f"nothing to resume: {request.db} does not exist (drop --resume to start a fuzz run)")
    store = Store(request.db)
    try:
        run = store.latest_run(unfinished_only=True)
        if run is None or run.parameters.get("kind") != "fuzz":
            what = "its last run is complete" if run is None else f"run {run.run_id} is a matrix run (`conformance run --resume`)"
            raise UsageError(f"no fuzz run to resume in {request.db}: {what}")
        dbcheck.checked_parameters(run, request.db, "fuzz")  # what the run is rebuilt from, typed as deploykit writes it
        timeout = request.timeout or run.parameters.get("timeout") or DEFAULT_TIMEOUT
        live = liveness.still_running(run.owner, store.last_activity(run), timeout)
        if live:
            raise UsageError(f"run {run.run_id} in {request.db} {live}; wait for it, or stop it first")
        given = vars(request)
        for name in FUZZ_FIXED:
            if name in request.explicit and not same(name, given[name], run.parameters.get(name)):  # order is no difference
                started = as_option(name, run.parameters.get(name))
                raise UsageError(f"--resume finishes the fuzz run as it started, with {started}, not"
                                 f" {as_option(name, given[name])}; drop {flag(name)}, or drop --resume")
        store.take_over(run.run_id, liveness.current_owner())
    except BaseException:
        store.close()
        raise
    stored = {name: run.parameters.get(name) for name in FUZZ_FIXED}
    resumed = FuzzRequest(**{**vars(request), **stored, "timeout": request.timeout or run.parameters.get("timeout")})
    return store, run, resumed


def _open(request: FuzzRequest) -> tuple[Store, Run, FuzzRequest]:
    if request.resume:
        return _resumed(request)
    request.dtypes = request.dtypes or _default_dtypes(request.backends)
    store = Store(request.db)
    run_id = store.start_run("fuzz", _parameters(request, request.dtypes), environment.collect(), 0,
                             liveness.current_owner(), divergences.snapshot(divergences.load()))
    return store, store.started_run(run_id), request


def fuzz(request: FuzzRequest, console: Console) -> FuzzOutcome:
    """Search every backend, store every result, and return the failure classes."""
    store, run, request = _open(_checked(request))
    try:
        try:
            evaluator, cut_short, shrunk = _search_all(store, run, request, console)
        except Stopped as stopped:
            raise stopped.error from None
        store.finish_run(run.run_id, planned=sum(len(found) for found in evaluator.seen.values()))
        results = store.results(run.run_id)
        return FuzzOutcome(store.started_run(run.run_id), results, group(results), shrunk, cut_short, evaluator.generated)
    except sqlite3.Error as error:
        raise RunAborted(f"cannot write results to {request.db}: {error}") from None
    finally:
        store.close()


def _search_all(store: Store, run: Run, request: FuzzRequest, console: Console) -> tuple[Evaluator, list[str], set[ClassKey]]:
    jobs = max(1, min(request.jobs, len(request.backends)))
    dtypes = request.dtypes
    assert dtypes is not None, "_open fills them in"
    options = WorkerOptions(threads=1, preload=tuple(request.backends))
    started = time.monotonic()
    cut_short: list[str] = []
    shrunk: set[ClassKey] = set()
    status = console.status("fuzz: starting workers") if console.is_terminal else None
    with WorkerPool(jobs, request.timeout or DEFAULT_TIMEOUT, options) as pool, status or contextlib.nullcontext():
        def progress(count: int) -> None:
            if status is not None:
                status.update(f"fuzz: {count} configs tried, {len(shrunk)} classes shrunk")

        evaluator = Evaluator(pool, store, run.run_id, request.backends, store.results(run.run_id), progress)
        if request.budget is not None:
            evaluator.deadline = started + request.budget * EXPLORE_SHARE
        try:
            explore(evaluator, dtypes, request.seed, request.max_examples or UNBOUNDED_EXAMPLES)
        except OutOfBudget:
            cut_short.append("explore")
        if request.budget is not None:
            evaluator.deadline = started + request.budget
        try:
            shrink_classes(evaluator, dtypes, request.seed, max(1, evaluator.generated), shrunk)
        except OutOfBudget:
            cut_short.append("shrink")
    return evaluator, cut_short, shrunk

