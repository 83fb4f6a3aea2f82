"""The `deploykit` command line: thin wrappers over the library.

Usage errors (unknown names, malformed files, bad options) print one line to stderr and exit 2
with no traceback; findings exit 1; success exits 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import signal
import sys
from pathlib import Path

import click
from click.core import ParameterSource
from rich.console import Console

from deploykit.backends.timing import MATRIX_TIMING, TimingOptions
from deploykit.errors import MissingDependency, RunAborted, RunInterrupted, UsageError
from deploykit.outputs import check_paths, factory_source
from deploykit.paths import KNOWN_DIVERGENCES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deploykit")
def app() -> None:
    """Deploy and verify ONNX ConvTranspose models on ONNX Runtime, TensorRT and PyTorch."""


@app.group("conformance")
def conformance_app() -> None:
    """Run and report the conformance matrix."""


#: for `check_paths`: the known-divergence table a command reads
_TABLE = {"the known-divergence table": KNOWN_DIVERGENCES}
# markup=False: a string printed here is never read as rich markup (a label `[/bold]x` is data);
# the renderers pass every user string as Text besides (deploykit.report.escape).
stdout = Console(width=160, markup=False)
stderr = Console(stderr=True, width=160, markup=False)


def _csv(value: str | None, option: str = "") -> list[str] | None:
    """None when the option was not given; an option given with no names is a usage error."""
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        raise UsageError(f"{option or 'option'} {value!r} names nothing; give comma-separated names")
    return parts


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None


def _write_json(path: Path, payload) -> None:
    _write_text(path, json.dumps(payload, indent=2) + "\n")


def _check_writable_file(path: Path, option: str) -> None:
    """Refuse an output path before a long run rather than after it; an existing file keeps its content."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; give a file path")
    existed = os.path.lexists(path)  # a dangling symlink counts: unlinking it would lose the user's link
    try:
        with path.open("a"):  # append mode: creates or opens, never truncates
            pass
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot write ({error.strerror})") from None
    if not existed:
        path.unlink(missing_ok=True)


def _check_writable_folder(path: Path, option: str) -> None:
    """Probe with what the command will do (make a subfolder), so root, ACLs and read-only mounts all count."""
    import tempfile

    try:
        Path(tempfile.mkdtemp(dir=path, prefix=".deploykit-probe-")).rmdir()
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot write in the folder ({error.strerror})") from None


@app.command("backends")
def backends_command() -> None:
    """List every backend: available or not, why, and its version."""
    from rich.table import Table

    from deploykit import backends as registry
    from deploykit.report.escape import term

    table = Table()
    for column in ("backend", "device", "available", "version", "description / reason"):
        table.add_column(column)
    for name in registry.names():
        try:
            backend = registry.get(name)
            status = backend.probe()
        except Exception as error:  # noqa: BLE001 - a broken plugin must not hide the others
            table.add_row(term(name), "?", "no", "-", term(f"failed to load: {error}"))
            continue
        detail = term(backend.description if status.available else status.reason)  # `deploykit[x]` is no markup
        table.add_row(term(name), term(backend.device), "yes" if status.available else "no", term(status.version or "-"), detail)
    stdout.print(table)


@app.command("generate")
@click.option("--matrix", required=True, help="smoke, default, or a path to a matrix YAML")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="folder for the ONNX backend-test layout")
@click.option("--dtypes", default=None, help="re-target every config to these dtypes (comma-separated)")
@click.option("--dynamic-batch", is_flag=True, help="declare X's first axis as the dynamic dimension N")
@click.option("--max-memory", default=None, help="memory budget per config, e.g. 512M or 8G [default: a quarter of memory, at most 4G]")
@click.option("--trtexec", "for_trtexec", is_flag=True,
    help="also write trtexec's raw inputs (<input>.bin) and DIR/trtexec.sh, which runs trtexec on every case")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "fp16", "bf16"]), default=None,
    help="with --trtexec: the build precision of trtexec.sh's commands [default: fp32]")
def generate_command(matrix: str, out: Path, dtypes: str | None, dynamic_batch: bool, max_memory: str | None,
                     for_trtexec: bool, precision: str | None) -> None:
    """Write each config as model.onnx + test_data_set_0 (inputs and reference outputs)."""
    from deploykit.backends.tensorrt import trtexec
    from deploykit.conformance.matrix import load
    from deploykit.execution import resources
    from deploykit.onnxio.write import build_case, check_problem, write_backend_test_case
    from deploykit.op.reference import run_spec

    if precision is not None and not for_trtexec:
        raise UsageError("--precision sets the build precision of trtexec.sh: give it with --trtexec")
    check_paths(inputs={"--matrix": matrix}, output_folders={"--out": out})
    loaded = load(matrix, _csv(dtypes, "--dtypes"))
    resources.check_budget(loaded.specs, resources.parse_size(max_memory) if max_memory else resources.default_budget())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"--out {out}: cannot create the folder ({error.strerror})") from None
    _check_writable_folder(out, "--out")
    if for_trtexec:
        trtexec.check_script_path(out)
    scripted, unchecked = [], []
    for spec in loaded.specs:
        case = build_case(spec, dynamic_batch)
        problem = None
        if spec.is_valid:
            problem = check_problem(case.model)  # ONNX's finding about itself: written down, the case kept
            unchecked += [(spec.label, problem)] if problem else []
            expected = run_spec(spec, case.x, case.require_weights(), case.b)
        else:
            expected = None
        safe_label = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.label).strip("._") or "config"
        folder = f"test_deploykit_{safe_label}_{spec.id}"
        try:
            write_backend_test_case(case, out / folder, expected, problem)
            if for_trtexec:
                trtexec.write_inputs(case, out / folder / "test_data_set_0")
                scripted.append((folder, case))
        except OSError as error:  # e.g. the disk filled up half-way
            raise UsageError(f"--out {out}: cannot write {error.filename or spec.label} ({error.strerror})") from None
    _say(f"wrote {len(loaded.specs)} test case(s) from matrix {loaded.name} to {out}")
    if unchecked:
        label, problem = unchecked[0]
        _warn(f"ONNX's own full check (strict shape inference) rejects {len(unchecked)} case(s) the spec text allows,"
              f" e.g. {label}: {problem}; they are written all the same, the checker's message in their deploykit.json"
              " as onnx_check")
    if for_trtexec:
        script = trtexec.write_script(out, scripted, precision or "fp32")
        _say(f"wrote {script}: run it with `bash {script}` where trtexec is, then"
             f" `deploykit conformance judge {out} --as tensorrt --precision {precision or 'fp32'}`")


@conformance_app.command("run")
@click.option("--matrix", default="smoke", show_default=True, help="smoke, default, or a path to a matrix YAML")
@click.option("--backends", default=None,
    help="comma-separated; default: every available CPU backend fit for a default run (not tvm-cpu, tinygrad-cpu: slower)")
@click.option("--dtypes", default=None, help="re-target every config to each of these dtypes (comma-separated)")
@click.option("--db", default="deploykit-results.db", show_default=True, type=click.Path(path_type=Path), help="SQLite results database")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1), help="worker processes in parallel")
@click.option("--resume", is_flag=True, help="finish the last unfinished run in --db")
@click.option("--timeout", default=None, type=click.FloatRange(min=0.1),
    help="seconds per (config, backend) [default: 120; a resumed run keeps its own unless given]")
@click.option("--atol", type=click.FloatRange(min=0), default=None, help="override the rounding-error bound with a fixed tolerance")
@click.option("--rtol", type=click.FloatRange(min=0), default=None, help="override the rounding-error bound with a fixed tolerance")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="also write the JSON records here")
@click.option("--latency", is_flag=True, help="also time every passing (config, backend)")
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=MATRIX_TIMING.warmup_ms, show_default=True, help="with --latency")
@click.option("--iterations", type=click.IntRange(min=1), default=MATRIX_TIMING.iterations, show_default=True,
    help="with --latency: at least this many samples")
@click.option("--duration", type=click.FloatRange(min=0), default=MATRIX_TIMING.duration_s, show_default=True,
    help="with --latency: at least this many seconds of samples")
@click.option("--include-transfers", is_flag=True, help="with --latency: time host<->device copies too")
@click.option("--cuda-graph", is_flag=True, help="with --latency: replay a CUDA graph of one inference per sample (GPU backends)")
@click.option("--precisions", "--precision", "precisions", default="fp32", show_default=True,
    help="build precisions, comma-separated (fp32, tf32, fp16, bf16); one result per precision")
@click.option("--max-memory", default=None, help="memory budget per config, e.g. 512M or 8G [default: a quarter of memory, at most 4G]")
@click.option("--shard", default=None, help="K/N: run shard K of N of the tasks (CI jobs in parallel; `conformance merge` joins them)")
def conformance_run(
    matrix: str,
    backends: str | None,
    dtypes: str | None,
    db: Path,
    jobs: int,
    resume: bool,
    timeout: float | None,
    atol: float | None,
    rtol: float | None,
    json_path: Path | None,
    latency: bool,
    warmup_ms: float,
    iterations: int,
    duration: float,
    include_transfers: bool,
    cuda_graph: bool,
    precisions: str,
    max_memory: str | None,
    shard: str | None,
) -> None:
    """Run a conformance matrix; exit 1 when a non-pass result is not a known divergence."""
    from deploykit import backends as registry
    from deploykit.conformance.run import RunRequest, run
    from deploykit.execution.resources import parse_size
    from deploykit.op.judging import Tolerance
    from deploykit.results import divergences

    check_paths(inputs={"--matrix": matrix, **_TABLE}, databases={"--db": db}, outputs={"--json": json_path})
    if not all(math.isfinite(v) for v in (timeout or 0.0, atol or 0.0, rtol or 0.0)):
        raise UsageError("--timeout, --atol and --rtol must be finite numbers")
    divergences.load()  # a missing or broken table fails here, before any work, not in every worker
    if json_path:
        _check_writable_file(json_path, "--json")
    if cuda_graph and not latency:
        raise UsageError("--cuda-graph is a timing mode: give it with --latency")
    timing = _timing_options(warmup_ms, iterations, duration, include_transfers, cuda_graph)
    tolerance = None if atol is None and rtol is None else Tolerance(atol or 0.0, rtol or 0.0)
    chosen = registry.parse(backends)
    if backends is not None and not resume:
        registry.require_available(chosen, "--backends")  # a named backend that cannot run is no pass
    if backends is None and not resume:
        missing = registry.default_backends()[1]
        if missing:
            _warn(f"not installed, so not run: {', '.join(missing)} (`deploykit backends` says how to add them)")
    request = RunRequest(
        matrix=matrix,
        backends=chosen,
        dtypes=_csv(dtypes, "--dtypes"),
        db=db,
        jobs=jobs,
        resume=resume,
        timeout=timeout,
        tolerance=tolerance,
        latency=timing.as_dict() if latency else None,
        precisions=_precisions(precisions),
        max_memory=parse_size(max_memory) if max_memory is not None else None,
        explicit=_explicit_run_options(),
        shard=_shard(shard),
    )
    if latency and jobs > 1:
        _warn(f"--latency with --jobs {jobs}: configs are timed side by side and compete for cores; use --jobs 1 for numbers to publish")
    with _sigterm_as_interrupt():
        try:
            outcome = run(request, stderr)
        except KeyboardInterrupt:
            if not db.exists():
                raise RunInterrupted("interrupted before the run started; nothing was stored", resumable=False) from None
            raise RunInterrupted(f"interrupted; the results stored in {db} stay") from None
    for note in outcome.notes:
        _warn(note)
    summary, known = _summarize(outcome.run, outcome.results)
    from deploykit.report import print_summary

    if json_path:  # written before the summary is laid out: a rendering failure must not lose it
        _write_text(json_path, _render(summary, outcome.results, known, "json"))
    print_summary(summary, stdout)
    _say(
        f"run {outcome.run.run_id}: {summary.total} results, {summary.passed} pass, {summary.known} known divergences,"
        f" {summary.new_findings} new findings; stored in {db}"
    )
    _refuse_if_nothing_tested(outcome.results, "choose --backends and --dtypes that run here")
    sys.exit(1 if summary.new_findings else 0)


def _refuse_if_nothing_tested(results: list, hint: str) -> None:
    """A run whose every result is `unsupported` or `unavailable` tested nothing: exit 2, so a CI job
    that asked for it does not go green on it (its results are stored and reported all the same)."""
    from deploykit.op.judging import SKIPPED

    if any(result.verdict not in SKIPPED for result in results):
        return
    example = next((f" (e.g. {r.backend} on {r.label}: {r.reason})" for r in results if r.reason), "")
    raise UsageError(f"nothing was tested: all {len(results)} results are unsupported or unavailable{example}; {hint}")


def _summarize(run, results: list):
    """A run's summary, made with the known-divergence table it was judged with (stored with it)."""
    from deploykit.results import divergences
    from deploykit.results.summary import summarize

    known = divergences.for_run(run.known_divergences)
    return summarize(results, run, known), known


def _render(summary, results: list, known: list, format_: str) -> str:
    """One report format as text (the renderers lay out the summary; none computes)."""
    from deploykit.report import print_summary, to_html, to_json_report, to_junit, to_markdown

    if format_ == "json":
        return json.dumps(to_json_report(summary, results, known), indent=2) + "\n"
    if format_ == "md":
        return to_markdown(summary)
    if format_ == "junit":
        return to_junit(summary, results, known)
    if format_ == "html":
        return to_html(summary, results)
    buffer = io.StringIO()
    console = Console(width=160, file=buffer, markup=False)
    print_summary(summary, console)
    return buffer.getvalue()


#: command-line options of `conformance run` -> the run parameter they set (see RESUME_FIXED)
_RUN_PARAMETER = {
    "matrix": "matrix", "backends": "backends", "dtypes": "dtypes", "atol": "tolerance", "rtol": "tolerance",
    "latency": "latency", "warmup_ms": "latency", "iterations": "latency", "duration": "latency",
    "include_transfers": "latency", "cuda_graph": "latency", "precisions": "precisions", "shard": "shard",
}


def _timing_options(warmup_ms: float, iterations: int, duration: float, include_transfers: bool,
                    cuda_graph: bool) -> TimingOptions:
    """Timing options from the command line; a CUDA graph replays device work only, so it cannot
    hold the host copies --include-transfers asks to time."""
    if cuda_graph and include_transfers:
        raise UsageError("--cuda-graph replays device work only; it cannot time host<->device copies (drop --include-transfers)")
    return TimingOptions(warmup_ms, iterations, duration, include_transfers, cuda_graph=cuda_graph)


def _shard(text: str | None) -> tuple[int, int] | None:
    from deploykit.conformance.run import parse_shard

    return None if text is None else parse_shard(text)


def _precisions(text: str) -> list[str]:
    from deploykit.backends.base import PRECISIONS

    chosen = _csv(text, "--precisions") or []  # a list: `text` is given
    for precision in chosen:
        if precision not in PRECISIONS:
            raise UsageError(f"--precisions: unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(chosen))


def _explicit_run_options() -> set[str]:
    """Run parameters the user typed (not defaults), so --resume can refuse contradicting ones."""
    context = click.get_current_context()
    return {
        parameter for option, parameter in _RUN_PARAMETER.items()
        if context.get_parameter_source(option) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a CI runner cancelling a job, `kill`) stops a run as Ctrl-C does: workers are
    stopped, what was stored stays, and the resume hint is printed."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@conformance_app.command("judge")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--as", "backend", required=True, help="the backend whose outputs these are (any known name, installed here or not), e.g. tensorrt")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "fp16", "bf16"]), default="fp32", show_default=True,
    help="the build precision the outputs were made at")
@click.option("--version", "version", default=None, help="the runtime's version that made them (version-ranged known divergences use it)")
@click.option("--db", default="deploykit-results.db", show_default=True, type=click.Path(path_type=Path), help="SQLite results database")
@click.option("--atol", type=click.FloatRange(min=0), default=None, help="override the rounding-error bound with a fixed tolerance")
@click.option("--rtol", type=click.FloatRange(min=0), default=None, help="override the rounding-error bound with a fixed tolerance")
@click.option("--shard", default=None, help="K/N: judge shard K of N of the cases (the split `conformance run --shard` makes)")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="also write the JSON records here")
@click.option("--max-memory", default=None, help="memory budget per config, e.g. 512M or 8G [default: a quarter of memory, at most 4G]")
def conformance_judge(folder: Path, backend: str, precision: str, version: str | None, db: Path, atol: float | None,
                      rtol: float | None, shard: str | None, json_path: Path | None, max_memory: str | None) -> None:
    """Judge outputs a runtime produced elsewhere (a `generate` tree with answer files); exit 1 on a new finding."""
    from deploykit.conformance.judge import JudgeRequest, judge
    from deploykit.op.judging import Tolerance

    if not all(math.isfinite(v) for v in (atol or 0.0, rtol or 0.0)):
        raise UsageError("--atol and --rtol must be finite numbers")
    answers = sorted(folder.glob("*/test_data_set_0/*")) + sorted(folder.glob("*/*.onnx")) if folder.is_dir() else []
    check_paths(inputs={"the answers in DIR": answers, **_TABLE}, databases={"--db": db}, outputs={"--json": json_path})
    if json_path:
        _check_writable_file(json_path, "--json")
    tolerance = None if atol is None and rtol is None else Tolerance(atol or 0.0, rtol or 0.0)
    from deploykit.execution.resources import parse_size

    budget = parse_size(max_memory) if max_memory is not None else None
    outcome = judge(JudgeRequest(folder, backend, precision, version, db, tolerance, _shard(shard), budget))
    summary, known = _summarize(outcome.run, outcome.results)
    from deploykit.report import print_summary

    if json_path:  # before the report is laid out: a rendering failure must not lose it
        _write_text(json_path, _render(summary, outcome.results, known, "json"))
    print_summary(summary, stdout)
    _say(f"run {outcome.run.run_id}: {summary.total} results judged from {folder} as {backend} ({precision}),"
         f" {summary.passed} pass, {summary.known} known divergences, {summary.new_findings} new findings; stored in {db}")
    if outcome.unanswered:
        shown = ", ".join(outcome.unanswered[:3]) + (", ..." if len(outcome.unanswered) > 3 else "")
        raise RunAborted(f"run {outcome.run.run_id} in {db} is incomplete: {len(outcome.unanswered)} of {outcome.run.planned}"
                         f" cases have no answer ({shown})", resumable=False)
    sys.exit(1 if summary.new_findings else 0)


@conformance_app.command("report")
@click.option("--db", default="deploykit-results.db", show_default=True, type=click.Path(path_type=Path), help="SQLite results database")
@click.option("--format", "format_", default="table", show_default=True, type=click.Choice(["table", "json", "md", "junit", "html"]))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="write here instead of stdout")
@click.option("--run", "run_id", type=int, default=None, help="run id (default: the latest)")
def conformance_report(db: Path, format_: str, output: Path | None, run_id: int | None) -> None:
    """Report a stored run: a table, JSON, Markdown (CI job summaries), JUnit XML or a self-contained HTML page."""
    from deploykit.results.store import Store

    check_paths(inputs=_TABLE, databases={"--db": db}, outputs={"-o": output})
    store = Store(db, create=False)
    try:
        runs = store.runs()
        if not runs:
            raise UsageError(f"{db} holds no runs yet")
        chosen = next((r for r in runs if r.run_id == run_id), None) if run_id is not None else runs[-1]
        if chosen is None:
            raise UsageError(f"no run {run_id} in {db}; runs: {', '.join(str(r.run_id) for r in runs)}")
        results = store.results(chosen.run_id)
    finally:
        store.close()
    summary, known = _summarize(chosen, results)
    text = _render(summary, results, known, format_)
    if output:
        _write_text(output, text)
    else:
        sys.stdout.write(text)


@conformance_app.command("compare")
@click.option("--baseline", required=True, type=click.Path(path_type=Path), help="a results database or a JSON report")
@click.option("--baseline-run", type=int, default=None, help="run id in a baseline database (default: its latest)")
@click.option("--db", default="deploykit-results.db", show_default=True, type=click.Path(path_type=Path), help="the current results")
@click.option("--run", "run_id", type=int, default=None, help="run id in --db (default: the latest)")
@click.option("--ratio-growth", type=click.FloatRange(min=1), default=10.0, show_default=True, help="bound_ratio growth worth reporting")
@click.option("--strict-ratio", is_flag=True, help="count bound_ratio growth as a regression too")
@click.option("--sigmas", type=click.FloatRange(min=0), default=3.0, show_default=True,
    help="latency slowdown threshold, in standard deviations of both sides' spread")
@click.option("--no-latency", is_flag=True, help="do not compare latency")
@click.option("--format", "format_", default="table", show_default=True, type=click.Choice(["table", "md"]))
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="also write the comparison as JSON")
def conformance_compare(baseline: Path, baseline_run: int | None, db: Path, run_id: int | None, ratio_growth: float,
                        strict_ratio: bool, sigmas: float, no_latency: bool, format_: str, json_path: Path | None) -> None:
    """Compare the current run with a baseline; exit 1 on any regression."""
    import dataclasses

    from deploykit.report.compare import comparison_markdown, print_comparison
    from deploykit.results.compare import compare, load_side

    check_paths(databases={"--baseline": baseline, "--db": db}, outputs={"--json": json_path})
    for option, value in (("--ratio-growth", ratio_growth), ("--sigmas", sigmas)):
        if not math.isfinite(value):
            raise UsageError(f"{option} {value:g} must be a finite number")
    if json_path:
        _check_writable_file(json_path, "--json")
    result = compare(load_side(baseline, baseline_run, "--baseline-run"), load_side(db, run_id), ratio_growth, sigmas,
                     not no_latency, strict_ratio)
    if json_path:  # written before the report is laid out: a rendering failure must not lose it
        _write_json(json_path, {**dataclasses.asdict(result), "regressed": result.regressed, "complete": not result.incomplete})
    if format_ == "md":
        sys.stdout.write(comparison_markdown(result))
    else:
        print_comparison(result, stdout)
    if result.incomplete:  # exit 2, not 1: no verdict on the whole run was possible, so none is claimed
        raise UsageError(f"the comparison is INCOMPLETE: {'; '.join(result.incomplete)}; compare whole, finished runs")
    sys.exit(1 if result.regressed else 0)


@conformance_app.command("merge")
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="the merged results database (new)")
def conformance_merge(shards: tuple[Path, ...], output: Path) -> None:
    """Join the shards of one run (`conformance run --shard K/N` on N jobs) into one database."""
    from deploykit.results.merge import merge

    check_paths(databases={"SHARDS": shards}, outputs={"-o": output})
    with _sigterm_as_interrupt():
        try:
            outcome = merge(list(shards), output)
        except KeyboardInterrupt:  # the merge writes beside -o and links it into place only when whole
            done = "was written whole just before" if output.exists() else "was not created"
            raise RunInterrupted(f"interrupted; -o {output} {done}", resumable=False) from None
    _say(f"merged shard(s) {', '.join(map(str, outcome.merged))} of {outcome.count}: {outcome.results} results in"
         f" {output} (run {outcome.run_id})")
    if outcome.missing or outcome.incomplete:
        gaps = [f"missing shard {i}/{outcome.count}" for i in outcome.missing]
        gaps += [f"shard {i}/{outcome.count} did not finish" for i in outcome.incomplete]
        raise RunAborted(f"the merged run in {output} is incomplete: {'; '.join(gaps)}")


@conformance_app.command("fuzz")
@click.option("--backends", default=None, help="comma-separated; default: every CPU backend of a default run")
@click.option("--budget", type=click.FloatRange(min=1), default=None, help="seconds for the whole search [default: 60 unless --max-examples is given]")
@click.option("--max-examples", type=click.IntRange(min=1), default=None,
    help="explore the first N configs the --seed generates, on every backend (deterministic: the same configs on any machine)")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Hypothesis's random seed")
@click.option("--dtypes", default=None, help="comma-separated [default: every dtype one of the backends has a kernel for]")
@click.option("--db", default="deploykit-results.db", show_default=True, type=click.Path(path_type=Path), help="SQLite results database (a fuzz run is a run)")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1), help="worker processes in parallel")
@click.option("--timeout", default=None, type=click.FloatRange(min=0.1), help="seconds per (config, backend) [default: 60]")
@click.option("--resume", is_flag=True, help="finish the last unfinished fuzz run in --db")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="also write the failure classes as JSON")
def conformance_fuzz(backends: str | None, budget: float | None, max_examples: int | None, seed: int, dtypes: str | None,
                     db: Path, jobs: int, timeout: float | None, resume: bool, json_path: Path | None) -> None:
    """Search configs with Hypothesis, shrink each failure class; exit 1 when a class is NEW."""
    from deploykit import backends as registry
    from deploykit.fuzz.search import FuzzRequest, fuzz
    from deploykit.report.fuzz import class_lines, classes_json
    from deploykit.results import divergences

    check_paths(inputs=_TABLE, databases={"--db": db}, outputs={"--json": json_path})
    if not all(math.isfinite(v) for v in (budget or 0.0, timeout or 0.0)):
        raise UsageError("--budget and --timeout must be finite numbers")
    divergences.load()
    if json_path:
        _check_writable_file(json_path, "--json")
    chosen = registry.parse(backends)
    if not resume:
        registry.require_available(chosen, "--backends")
    if budget is None and max_examples is None and not resume:
        budget = 60.0
    context = click.get_current_context()
    explicit = {name for name in ("backends", "dtypes", "seed", "max_examples", "budget")
                if context.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    request = FuzzRequest(backends=chosen, seed=seed, max_examples=max_examples, budget=budget,
                          dtypes=_csv(dtypes, "--dtypes"), db=db, jobs=jobs, timeout=timeout, resume=resume,
                          explicit=explicit)
    with _sigterm_as_interrupt():
        try:
            outcome = fuzz(request, stderr)
        except KeyboardInterrupt:
            if not db.exists():
                raise RunInterrupted("interrupted before the run started; nothing was stored", resumable=False) from None
            raise RunInterrupted(f"interrupted; the results stored in {db} stay", "conformance fuzz") from None
    if json_path:  # before the lines: a rendering failure must not lose it
        _write_json(json_path, classes_json(outcome.classes, outcome.shrunk))
    for line in class_lines(outcome.classes, outcome.shrunk):
        stdout.print(line, markup=False, highlight=False, soft_wrap=True)
    unshrunk = sum(found.key not in outcome.shrunk for found in outcome.classes)
    if "shrink" in outcome.cut_short and unshrunk:
        _warn(f"the time budget ended before every class was shrunk: {unshrunk} show the smallest config seen")
    if "explore" in outcome.cut_short and outcome.explored:
        stdout.print(f"explored {outcome.explored} examples in the time budget (a config drawn twice counts"
                     f" twice); --seed {request.seed} --max-examples {outcome.explored} explores the same"
                     " ones on any machine")
    new = sum(found.key.known_divergence is None for found in outcome.classes)
    configs = len({(r.config_id, r.expect) for r in outcome.results})
    _say(f"fuzz run {outcome.run.run_id}: {configs} configs, {len(outcome.results)} results,"
         f" {len(outcome.classes)} failure classes ({new} NEW); stored in {db}")
    _refuse_if_nothing_tested(outcome.results, "choose --backends and --dtypes that run here")
    sys.exit(1 if new else 0)


@app.command("repro")
@click.option("--db", default="deploykit-results.db", show_default=True, type=click.Path(path_type=Path), help="SQLite results database")
@click.option("--config", "config", required=True, help="the config's id (or a 6+ character prefix) or label")
@click.option("--backend", required=True, help="the backend whose result to reproduce")
@click.option("--run", "run_id", type=int, default=None, help="run id (default: the latest)")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="folder to write (created)")
@click.option("--max-memory", default=None, help="memory budget for the config, e.g. 512M or 8G [default: a quarter of memory, at most 4G]")
def repro_command(db: Path, config: str, backend: str, run_id: int | None, output: Path, max_memory: str | None) -> None:
    """Write a standalone repro folder (model, inputs, expected output, repro.py, ISSUE.md) for one result."""
    from deploykit import backends as registry
    from deploykit.execution.resources import parse_size
    from deploykit.repro.bundle import write_bundle
    from deploykit.repro.templates import install_line

    check_paths(databases={"--db": db}, output_folders={"-o": output})
    registry.get(backend)
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output} is a file; give a folder")
    budget = parse_size(max_memory) if max_memory is not None else None
    bundle = write_bundle(db, config, backend, output, run_id, budget)
    spec_label = bundle.result.label
    _say(f"wrote {', '.join(bundle.files)} to {output} ({bundle.result.verdict} of {backend} on {spec_label})")
    from deploykit.op.spec import ConvTransposeSpec

    spec = ConvTransposeSpec.from_dict(bundle.result.spec)  # read already: write_bundle checked it
    _say(f"run it: pip install {install_line(spec, bundle.recipe)} && python {output / 'repro.py'}")


@app.command("profile")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--matrix", default=None, help="profile a matrix config instead of a model file (with --config)")
@click.option("--config", "config", default=None, help="label or id of the matrix config")
@click.option("--backends", default="ort-cpu", show_default=True, help="comma-separated backends")
@click.option("--shape", "shapes", multiple=True, help="NAME=1x256x32x32 for an input with dynamic axes (repeatable)")
@click.option("--batch", default=None, help="batch sizes to sweep, e.g. 1,8,32 (dynamic first axis)")
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=200.0, show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), default=10, show_default=True, help="at least this many samples")
@click.option("--duration", type=click.FloatRange(min=0), default=1.0, show_default=True, help="at least this many seconds of samples")
@click.option("--include-transfers", is_flag=True, help="time host<->device copies too")
@click.option("--cuda-graph", is_flag=True, help="replay a CUDA graph of one inference per sample (GPU backends)")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="intra-op threads [default: all cores]")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "fp16", "bf16"]), default="fp32", show_default=True,
    help="build precision (a backend that cannot honour it says so)")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="write statistics and environment here")
@click.option("--max-memory", default=None, help="memory budget for the model or config, e.g. 512M or 8G [default: a quarter of memory, at most 4G]")
def profile_command(
    model: Path | None,
    matrix: str | None,
    config: str | None,
    backends: str,
    shapes: tuple[str, ...],
    batch: str | None,
    warmup_ms: float,
    iterations: int,
    duration: float,
    include_transfers: bool,
    cuda_graph: bool,
    threads: int | None,
    precision: str,
    json_path: Path | None,
    max_memory: str | None,
) -> None:
    """Time MODEL.onnx (or one matrix config) on each backend with one method."""
    import os

    from deploykit import backends as registry
    from deploykit.backends import require_available
    from deploykit.execution.resources import parse_size
    from deploykit.onnxio.read import parse_shape
    from deploykit.profile import failing_rows, matrix_spec, profile, report, targets_for_model, targets_for_spec
    from deploykit.report import profile_table

    check_paths(inputs={"MODEL": model, "--matrix": matrix}, outputs={"--json": json_path})
    if not (math.isfinite(warmup_ms) and math.isfinite(duration)):
        raise UsageError(f"--warmup-ms ({warmup_ms:g}) and --duration ({duration:g}) must be finite numbers")
    names = registry.parse(backends)
    if click.get_current_context().get_parameter_source("backends") != ParameterSource.DEFAULT:
        require_available(names, "--backends")
    batches = _int_list(batch, "--batch")
    budget = parse_size(max_memory) if max_memory is not None else None
    if json_path:
        _check_writable_file(json_path, "--json")
    if (model is None) == (matrix is None):
        raise UsageError("give either MODEL.onnx or --matrix M --config LABEL")
    if matrix is not None:
        if not config:
            raise UsageError("--matrix needs --config LABEL_OR_ID")
        if shapes:
            raise UsageError("--shape applies to MODEL.onnx, not to a matrix config")
        spec = matrix_spec(matrix, config)
        targets, source = targets_for_spec(spec, batches, budget), f"matrix {matrix}: {spec.label} ({spec.id})"
    else:
        assert model is not None, "one of MODEL and --matrix, checked above"
        overrides = dict(parse_shape(text) for text in shapes)
        targets, source = targets_for_model(model, overrides, batches, budget), str(model)
    options = _timing_options(warmup_ms, iterations, duration, include_transfers, cuda_graph)
    rows = profile(targets, names, options, threads or os.cpu_count(), precision)
    if json_path:  # before the table: a rendering failure must not lose the measurements
        _write_json(json_path, report(rows, options, source))
    profile_table(rows, stdout, source)
    failed = failing_rows(rows)
    if failed:
        _say(f"{len(failed)} row(s) where the backend rejected or crashed on the model: "
             + ", ".join(f"{row.backend} (batch {row.batch}): {row.status}" for row in failed))
        sys.exit(1)


@app.command("export")
@click.argument("target")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="ONNX file to write [default: TARGET-name.onnx]")
@click.option("--input-shape", "input_shapes", multiple=True, help="1x128x1x1 per input (repeatable); default: the factory's example inputs")
@click.option("--opset", type=click.IntRange(11, 23), default=18, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="make axis 0 of every input dynamic ('batch')")
@click.option("--dynamic-axis", "dynamic_axes", multiple=True,
              help="AXIS=NAME: a named dynamic axis on every input that has it; INPUT:AXIS=NAME on one input (its ONNX name or position) (repeatable)")
@click.option("--exporter", type=click.Choice(["dynamo", "torchscript"]), default=None, help="[default: torch's current default]")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--verify-backends", default=None, help="comma-separated [default: every deployment runtime available on the CPU]")
@click.option("--rtol", type=float, default=None, help="whole-model tolerance override")
@click.option("--atol", type=float, default=None, help="whole-model tolerance override")
@click.option("--engine", type=click.Path(path_type=Path), default=None, help="also build a TensorRT engine here")
@click.option("--engine-profile", default="default", show_default=True, help="with --engine: engines/profiles/NAME.yaml, or a profile YAML path")
@click.option("--engine-precision", type=click.Choice(["fp32", "tf32", "fp16", "bf16"]), default="fp32", show_default=True,
    help="with --engine: build precision (fp32: the model's own types)")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="write the verification report here")
def export_command(
    target: str,
    output: Path | None,
    input_shapes: tuple[str, ...],
    opset: int,
    dynamic_batch: bool,
    dynamic_axes: tuple[str, ...],
    exporter: str | None,
    dtype: str,
    verify_backends: str | None,
    rtol: float | None,
    atol: float | None,
    engine: Path | None,
    engine_profile: str,
    engine_precision: str,
    json_path: Path | None,
) -> None:
    """Export TARGET (built-in example, package.module:factory or file.py:factory) to ONNX and verify it."""
    from deploykit import backends as registry
    from deploykit.backends import require_available
    from deploykit.backends.tensorrt import engines
    from deploykit.errors import lazy_import
    from deploykit.export.dynamic import batch_request, parse_request
    from deploykit.export.exporter import ExportFailed, ExportOptions, default_verify_backends, make_output_folder, run_export
    from deploykit.export.target import resolve
    from deploykit.report.export import export_summary

    output = output or Path(f"{target.rsplit(':', 1)[-1].replace('/', '_')}.onnx")
    check_paths(inputs={"TARGET": factory_source(target), "--engine-profile": engine_profile},
                outputs={"-o": output, "--engine": engine, "--json": json_path})
    for option, value in (("--rtol", rtol), ("--atol", atol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{option} {value:g} must be a finite number >= 0")
    engine_settings = _engine_settings(engine_profile, engine_precision, dtype) if engine is not None else None
    lazy_import("torch", "torch", "torch")
    backends = registry.parse(verify_backends) if verify_backends is not None else default_verify_backends()
    if verify_backends is not None:
        require_available(backends, "--verify-backends")
    axes = ([batch_request()] if dynamic_batch else []) + [parse_request(text) for text in dynamic_axes]
    make_output_folder(output)  # a bad -o is a usage error before any work, not an exporter refusal
    _check_writable_file(output, "-o")
    if json_path:
        _check_writable_file(json_path, "--json")
    module, inputs = resolve(target)
    if input_shapes:
        import torch

        shapes = [_shape(text) for text in input_shapes]
        if inputs is not None and len(shapes) != len(inputs):
            raise UsageError(f"--input-shape given {len(shapes)} time(s), the factory's example has {len(inputs)} input(s)")
        inputs = tuple(torch.randn(*shape) for shape in shapes)
    if inputs is None:
        raise UsageError(f"TARGET {target!r} gives no example inputs; pass --input-shape, e.g. --input-shape 1x128x1x1")
    _check_runs(module, inputs, target)
    options = ExportOptions(
        output=output, opset=opset, exporter=exporter, dtype=dtype, dynamic_axes=axes,
        verify_backends=backends, rtol=rtol, atol=atol,
    )
    try:
        report = run_export(target, module, inputs, options)
    except ExportFailed as error:  # the exporter refused the model: a finding, not a usage error
        _error(str(error))
        sys.exit(1)
    engine_refused = None
    if engine is not None and report.exit_code == 0:
        assert engine_settings is not None, "made above when --engine is given"
        try:
            engines.export_engine(output.read_bytes(), engine, engine_precision, engine_settings)
            report.engine = str(engine)
        except engines.EngineRefused as error:  # TensorRT refused the model: a finding
            engine_refused = f"--engine: TensorRT refused the model: {error}"
    if json_path:  # before the summary: a rendering failure must not lose the report
        _write_json(json_path, report.as_dict())
    export_summary(report, stdout)
    if engine_refused:
        _error(engine_refused)
    sys.exit(1 if engine_refused else report.exit_code)


def _engine_settings(profile_name: str, precision: str, dtype: str):
    """The engine profile for --engine, checked before any work: a bad profile, a precision it
    leaves out, or no TensorRT/GPU here is one line, not a failure after the export."""
    from deploykit.backends.tensorrt import engines
    from deploykit.backends.tensorrt.profiles import load_profile

    profile = load_profile(profile_name)
    problem = engines.precision_problem(precision, dtype, profile)
    if problem:
        raise UsageError(f"--engine-precision {precision}: {problem}")
    reason = engines.availability()
    if reason:
        raise UsageError(f"--engine: cannot build a TensorRT engine here: {reason}")
    problem = engines.precision_problem(precision, dtype, profile, engines.tensorrt_version())
    if problem:  # what this TensorRT version cannot build
        raise UsageError(f"--engine-precision {precision}: {problem}")
    engines.check_profile_fits_gpu(profile)
    return profile


def _shape(text: str) -> tuple[int, ...]:
    from deploykit.onnxio.read import parse_dims

    shape = parse_dims(text)
    if shape is None:
        raise UsageError(f"--input-shape {text!r} must look like 1x128x1x1 (positive integers)")
    return shape


def _check_runs(module, inputs: tuple, target: str) -> None:
    """Run the module once so a wrong --input-shape is one line, not an exporter traceback."""
    import torch

    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as error:  # noqa: BLE001
        shapes = ", ".join("x".join(map(str, t.shape)) for t in inputs)
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"{target} does not run on input shape(s) {shapes}: {first}") from None


@app.command("lint")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--backends", default=None, help="runtimes you deploy to [default: every deployment runtime deploykit knows]")
@click.option("--shape", "shapes", multiple=True, help="NAME=1x256x32x32 for inputs with dynamic axes")
@click.option("--db", type=click.Path(path_type=Path), default=None, help="results database: show recorded verdicts")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="write the findings here")
def lint_command(model: Path, backends: str | None, shapes: tuple[str, ...], db: Path | None, json_path: Path | None) -> None:
    """Report every ConvTranspose hazard in MODEL.onnx; exit 1 on a hazard, an unresolved node, or a
    new finding recorded in --db for a node's exact config, on a requested backend."""
    from deploykit import backends as registry
    from deploykit.lint import as_json, lint
    from deploykit.onnxio.read import load_model, parse_shape, resolve_shapes
    from deploykit.report.export import lint_summary

    check_paths(inputs={"MODEL": model, **_TABLE}, databases={"--db": db}, outputs={"--json": json_path})
    requested = registry.parse(backends) if backends is not None else registry.deployment_targets()
    if json_path:
        _check_writable_file(json_path, "--json")
    loaded = load_model(model)
    overrides = dict(parse_shape(text) for text in shapes)
    try:
        concrete = resolve_shapes(loaded, overrides)
    except UsageError:
        if overrides:
            raise
        # Hazards do not depend on the batch: a dynamic batch axis is linted at batch 1.  Other
        # dynamic axes change padding and shapes, so they must be given (the error says how).
        concrete = resolve_shapes(loaded, {}, batch=1)
    if db is not None and not db.is_file():
        raise UsageError(f"results database {db} {'is a directory' if db.is_dir() else 'does not exist'}")
    reports = lint(loaded, concrete, requested, db)
    if json_path:  # before the table: a rendering failure must not lose the findings
        _write_json(json_path, {"model": str(model), "backends": requested, "nodes": as_json(reports)})
    hazards = lint_summary(reports, stdout, str(model))
    sys.exit(1 if hazards else 0)


def _int_list(value: str | None, option: str) -> list[int] | None:
    if not value:
        return None
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{option} {value!r} must be comma-separated positive integers, e.g. 1,8,32") from None
    if not numbers or min(numbers) < 1:
        raise UsageError(f"{option} {value!r} must be comma-separated positive integers, e.g. 1,8,32")
    return numbers


def _say(message: str) -> None:
    """A line on stdout that embeds user strings (paths, labels): shown as data, never as markup, and
    kept on one line however long (scripts and CI logs grep it)."""
    from deploykit.report.escape import term_line

    stdout.print(term_line(message), soft_wrap=True)


def _warn(message: str) -> None:
    from deploykit.report.escape import one_line

    print(f"deploykit: warning: {one_line(message)}", file=sys.stderr)


def _error(message: str) -> None:
    from deploykit.report.escape import one_line

    print(f"deploykit: error: {' '.join(one_line(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point: turn usage errors into one line and exit code 2, never a traceback."""
    try:
        code = app.main(args=argv, prog_name="deploykit", standalone_mode=False)
    except (UsageError, MissingDependency) as error:
        _error(str(error))
        return 2
    except RunInterrupted as error:
        _error(f"{error}: finish the run with `deploykit {error.command} --resume` and the same --db" if error.resumable else str(error))
        return 130
    except RunAborted as error:
        hint = "what was stored stays: fix the cause, then finish with --resume" if error.resumable else "fix the cause and run again"
        _error(f"{error}; {hint}")
        return 2
    except MemoryError:
        _error("out of memory; lower --max-memory or --jobs, or run fewer or smaller configs")
        return 2
    except click.exceptions.UsageError as error:
        _error(error.format_message())
        return 2
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except click.ClickException as error:
        _error(error.format_message())
        return error.exit_code
    except click.exceptions.Abort:
        _error("interrupted")
        return 130
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
