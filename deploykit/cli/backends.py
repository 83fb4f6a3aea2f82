"""`deploykit backends`: what runs here, and why not."""

from __future__ import annotations

from deploykit.cli.app import app, stdout


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
