"""The entry point: usage errors become one line and exit code 2, never a traceback."""

from __future__ import annotations

import click

from deploykit.cli.app import app
from deploykit.cli.shared import print_error
from deploykit.errors import MissingDependency, RunAborted, RunInterrupted, UsageError


def main(argv: list[str] | None = None) -> int:
    """Entry point: turn usage errors into one line and exit code 2, never a traceback."""
    try:
        code = app.main(args=argv, prog_name="deploykit", standalone_mode=False)
    except (UsageError, MissingDependency) as error:
        print_error(str(error))
        return 2
    except RunInterrupted as error:
        print_error(f"{error}: finish the run with `deploykit {error.command} --resume` and the same --db" if error.resumable else str(error))
        return 130
    except RunAborted as error:
        hint = "what was stored stays: fix the cause, then finish with --resume" if error.resumable else "fix the cause and run again"
        print_error(f"{error}; {hint}")
        return 2
    except MemoryError:
        print_error("out of memory; lower --max-memory or --jobs, or run fewer or smaller configs")
        return 2
    except click.exceptions.UsageError as error:
        print_error(error.format_message())
        return 2
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except click.ClickException as error:
        print_error(error.format_message())
        return error.exit_code
    except click.exceptions.Abort:
        print_error("interrupted")
        return 130
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    return code if isinstance(code, int) else 0
