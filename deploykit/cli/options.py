"""Options that several commands take, declared once, after Polygraphy's shared argument groups.

Each is a decorator factory: the name, type and default of an option are the same in every command that takes
it, and a command may say what the option means for it in its own `help`.  The build precisions offered are the
vocabulary's, so a new precision appears in every command at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from deploykit.backends.timing import TimingOptions
from deploykit.vocabulary import PRECISIONS

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

#: where results go unless --db says otherwise
DEFAULT_DB = "deploykit-results.db"
_MEMORY = "e.g. 512M or 8G [default: a quarter of memory, at most 4G]"


def backends_option(help: str, default: str | None = None) -> Decorator:
    """--backends: comma-separated backend names (deploykit.backends.parse reads them); each command says its default."""
    return click.option("--backends", default=default, show_default=default is not None, help=help)


def db_option(help: str = "SQLite results database") -> Decorator:
    """--db: the results database a command stores into or reads (deploykit-results.db by default)."""
    return click.option("--db", default=DEFAULT_DB, show_default=True, type=click.Path(path_type=Path), help=help)


def json_option(help: str = "also write the JSON records here") -> Decorator:
    """--json PATH: a machine-readable copy of what the command found (stored as `json_path`)."""
    return click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help=help)


def max_memory_option(scope: str = "per config") -> Decorator:
    """--max-memory: the memory budget checked before any work (see deploykit.execution.resources)."""
    return click.option("--max-memory", default=None, help=f"memory budget {scope}, {_MEMORY}")


def tolerance_options(function: F) -> F:
    """--atol and --rtol: a fixed tolerance instead of the rounding-error bound."""
    for name in ("--rtol", "--atol"):
        function = click.option(name, type=click.FloatRange(min=0), default=None,
                                help="override the rounding-error bound with a fixed tolerance")(function)
    return function


def precision_option(*names: str, default: str | None = "fp32", help: str | None = None) -> Decorator:
    """A build precision, one of the vocabulary's (fp32, tf32, fp16, bf16)."""
    return click.option(*(names or ("--precision",)), type=click.Choice(list(PRECISIONS)), default=default,
                        show_default=default is not None, help=help)


def shard_option(help: str) -> Decorator:
    """--shard K/N: one part of the work, the same split wherever it is made (parsed by parse_shard_option)."""
    return click.option("--shard", default=None, help=help)


def sampling_options(defaults: TimingOptions, when: str | None = None) -> Decorator:
    """--warmup-ms, --iterations, --duration, --include-transfers, --cuda-graph: how latency is sampled.

    `defaults` are the command's (a matrix times every config, so `run` takes shorter ones); `when` says when
    they apply ("with --latency") and starts each help.  cli.shared.timing_options builds TimingOptions from them.
    """
    prefix = f"{when}: " if when else ""
    options = [
        click.option("--warmup-ms", type=click.FloatRange(min=0), default=defaults.warmup_ms, show_default=True, help=when),
        click.option("--iterations", type=click.IntRange(min=1), default=defaults.iterations, show_default=True,
                     help=f"{prefix}at least this many samples"),
        click.option("--duration", type=click.FloatRange(min=0), default=defaults.duration_s, show_default=True,
                     help=f"{prefix}at least this many seconds of samples"),
        click.option("--include-transfers", is_flag=True, help=f"{prefix}time host<->device copies too"),
        click.option("--cuda-graph", is_flag=True, help=f"{prefix}replay a CUDA graph of one inference per sample (GPU backends)"),
    ]

    def decorate(function: F) -> F:
        for option in reversed(options):  # click lists options in the order they are written above a command
            function = option(function)
        return function

    return decorate
