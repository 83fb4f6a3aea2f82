"""The `deploykit` command line: thin wrappers over the library, one module per command.

Usage errors (unknown names, malformed files, bad options) print one line to stderr and exit 2
with no traceback; findings exit 1; success exits 0.  Options that several commands take (--db,
--json, --backends, --max-memory, ...) are declared once, in `deploykit.cli.options`.
"""

from __future__ import annotations

# Importing a command module registers its command on the group it names.
from deploykit.cli import backends, export, fuzz, generate, judge, lint, profile, reports, repro, run  # noqa: F401
from deploykit.cli.app import app
from deploykit.cli.entry import main

__all__ = ["app", "main"]
