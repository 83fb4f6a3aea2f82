"""Errors a user can fix; the CLI prints them as one line and exits 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: an unknown name, a malformed file, a missing path."""


class MissingDependency(ImportError):
    """An optional package is not installed; the message names it and the install command."""


def lazy_import(module: str, package: str, extra: str | None = None):
    """Import a heavy optional module only when it is needed, with a fix-it message otherwise."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        hint = f"pip install 'deploykit[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependency(f"needs the '{package}' package ({error}); install it with: {hint}") from error


class RunAborted(Exception):
    """The run cannot go on for a reason outside the backends under test (a full disk, workers
    that do not start, deploykit's own reference failing).  Nothing false is recorded: what was
    stored stays, and `--resume` finishes the run once the cause is fixed (`resumable=False`
    when the run never started).  Exit code 2."""

    def __init__(self, message: str, resumable: bool = True) -> None:
        super().__init__(message)
        self.resumable = resumable


class RunInterrupted(RunAborted):
    """Ctrl-C or SIGTERM stopped a run; exit code 130 as for any interrupted command.
    `command` is the one that resumes it (with --resume)."""

    def __init__(self, message: str, command: str = "conformance run", resumable: bool = True) -> None:
        super().__init__(message, resumable)
        self.command = command
