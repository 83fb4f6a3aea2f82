"""What several commands do alike: read list options, check and write output files, print one line, stop on SIGTERM,
summarize and render a stored run."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
from pathlib import Path
from typing import Iterator

from rich.console import Console

from deploykit.backends.timing import TimingOptions
from deploykit.cli.app import stdout
from deploykit.errors import RunInterrupted, UsageError


def parse_csv(value: str | None, option: str = "") -> list[str] | None:
    """None when the option was not given; an option given with no names is a usage error."""
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        raise UsageError(f"{option or 'option'} {value!r} names nothing; give comma-separated names")
    return parts


def write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None


def write_json(path: Path, payload) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def check_writable_file(path: Path, option: str) -> None:
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


def check_writable_folder(path: Path, option: str) -> None:
    """Probe with what the command will do (make a subfolder), so root, ACLs and read-only mounts all count."""
    import tempfile

    try:
        Path(tempfile.mkdtemp(dir=path, prefix=".deploykit-probe-")).rmdir()
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot write in the folder ({error.strerror})") from None


def refuse_if_nothing_tested(results: list, hint: str) -> None:
    """A run whose every result is `unsupported` or `unavailable` tested nothing: exit 2, so a CI job
    that asked for it does not go green on it (its results are stored and reported all the same)."""
    from deploykit.op.judging import SKIPPED

    if any(result.verdict not in SKIPPED for result in results):
        return
    example = next((f" (e.g. {r.backend} on {r.label}: {r.reason})" for r in results if r.reason), "")
    raise UsageError(f"nothing was tested: all {len(results)} results are unsupported or unavailable{example}; {hint}")


def summarize_run(run, results: list):
    """A run's summary, made with the known-divergence table it was judged with (stored with it)."""
    from deploykit.results import divergences
    from deploykit.results.summary import summarize

    known = divergences.for_run(run.known_divergences)
    return summarize(results, run, known), known


def render(summary, results: list, known: list, format_: str) -> str:
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


def timing_options(warmup_ms: float, iterations: int, duration: float, include_transfers: bool,
                    cuda_graph: bool) -> TimingOptions:
    """Timing options from the command line; a CUDA graph replays device work only, so it cannot
    hold the host copies --include-transfers asks to time."""
    if cuda_graph and include_transfers:
        raise UsageError("--cuda-graph replays device work only; it cannot time host<->device copies (drop --include-transfers)")
    return TimingOptions(warmup_ms, iterations, duration, include_transfers, cuda_graph=cuda_graph)


def parse_shard_option(text: str | None) -> tuple[int, int] | None:
    from deploykit.conformance.run import parse_shard

    return None if text is None else parse_shard(text)


def parse_precisions(text: str) -> list[str]:
    from deploykit.backends.base import PRECISIONS

    chosen = parse_csv(text, "--precisions") or []  # a list: `text` is given
    for precision in chosen:
        if precision not in PRECISIONS:
            raise UsageError(f"--precisions: unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(chosen))


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a CI runner cancelling a job, `kill`) stops a run as Ctrl-C does: workers are
    stopped, what was stored stays, and the resume hint is printed."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interruptible_run(db: Path, command: str = "conformance run") -> Iterator[None]:
    """A run stopped by Ctrl-C or SIGTERM: what was stored in `db` stays, and the error says how to resume
    (or that nothing was stored, when the run had not started)."""
    with sigterm_as_interrupt():
        try:
            yield
        except KeyboardInterrupt:
            if not db.exists():
                raise RunInterrupted("interrupted before the run started; nothing was stored", resumable=False) from None
            raise RunInterrupted(f"interrupted; the results stored in {db} stay", command) from None


def parse_int_list(value: str | None, option: str) -> list[int] | None:
    if not value:
        return None
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{option} {value!r} must be comma-separated positive integers, e.g. 1,8,32") from None
    if not numbers or min(numbers) < 1:
        raise UsageError(f"{option} {value!r} must be comma-separated positive integers, e.g. 1,8,32")
    return numbers


def say(message: str) -> None:
    """A line on stdout that embeds user strings (paths, labels): shown as data, never as markup, and
    kept on one line however long (scripts and CI logs grep it)."""
    from deploykit.report.escape import term_line

    stdout.print(term_line(message), soft_wrap=True)


def print_warning(message: str) -> None:
    from deploykit.report.escape import one_line

    print(f"deploykit: warning: {one_line(message)}", file=sys.stderr)


def print_error(message: str) -> None:
    from deploykit.report.escape import one_line

    print(f"deploykit: error: {' '.join(one_line(message).split())}", file=sys.stderr)
