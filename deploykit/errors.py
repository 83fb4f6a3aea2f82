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
