"""`deploykit repro`: a standalone folder that shows one result to a runtime's maintainers."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.cli.app import app
from deploykit.cli.options import db_option, max_memory_option
from deploykit.cli.shared import say
from deploykit.errors import UsageError
from deploykit.outputs import check_paths


def _needed_for_a_result(context: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--config and --backend are required unless --divergence was given, with click's own message.

    Click handles the options typed on the command line first, so a given --divergence is known here; a
    missing one is reported in the order of declaration (--config, --backend, then -o), as before
    --divergence existed.
    """
    if value is None and context.params.get("divergence") is None:
        raise click.MissingParameter(ctx=context, param=param)
    return value


@app.command("repro")
@db_option()
@click.option("--config", "config", default=None, callback=_needed_for_a_result,
              help="the config's id (or a 6+ character prefix) or label")
@click.option("--backend", default=None, callback=_needed_for_a_result, help="the backend whose result to reproduce")
@click.option("--run", "run_id", type=int, default=None, help="run id (default: the latest)")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="folder to write (created)")
@max_memory_option("for the config")
@click.option("--divergence", default=None,
              help="a known divergence's id: write its folder from conformance/known_divergences.yaml instead of a result"
                   " (`all`: every one, each in -o/<id>)")
def repro_command(db: Path, config: str | None, backend: str | None, run_id: int | None, output: Path, max_memory: str | None,
                  divergence: str | None) -> None:
    """Write a standalone repro folder (model, inputs, expected output, repro.py, ISSUE.md) for one result, or for a known divergence."""
    from deploykit import backends as registry
    from deploykit.execution.resources import parse_size
    from deploykit.repro.bundle import write_bundle
    from deploykit.repro.templates import install_line

    given = _given_options(("db", "config", "backend", "run_id", "max_memory"))
    if divergence is not None:
        from deploykit.repro.divergence import divergence_command

        for written in divergence_command(divergence, output, given):
            say(f"wrote {', '.join(written.files)} to {written.folder} (known divergence {written.id})")
        return
    assert config is not None and backend is not None  # _needed_for_a_result
    check_paths(databases={"--db": db}, output_folders={"-o": output})
    registry.get(backend)
    if output.exists() and not output.is_dir():
        raise UsageError(f"-o {output} is a file; give a folder")
    budget = parse_size(max_memory) if max_memory is not None else None
    bundle = write_bundle(db, config, backend, output, run_id, budget)
    spec_label = bundle.result.label
    say(f"wrote {', '.join(bundle.files)} to {output} ({bundle.result.verdict} of {backend} on {spec_label})")
    from deploykit.op.spec import ConvTransposeSpec

    spec = ConvTransposeSpec.from_dict(bundle.result.spec)  # read already: write_bundle checked it
    say(f"run it: pip install {install_line(spec, bundle.recipe)} && python {output / 'repro.py'}")


def _given_options(names: tuple[str, ...]) -> list[str]:
    """Which of the current command's options `names` were given on the command line, as typed (`--run`)."""
    context = click.get_current_context()
    options = {param.name: param for param in context.command.params}
    return [max(options[name].opts, key=len) for name in names
            if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
