"""The command groups (`deploykit`, `deploykit conformance`) and the consoles every command prints with."""

from __future__ import annotations

import click
from rich.console import Console

from deploykit.paths import KNOWN_DIVERGENCES


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="deploykit")
def app() -> None:
    """Deploy and verify ONNX ConvTranspose models on ONNX Runtime, TensorRT and PyTorch."""


@app.group("conformance")
def conformance_app() -> None:
    """Run and report the conformance matrix."""


#: for `check_paths`: the known-divergence table a command reads
DIVERGENCE_TABLE = {"the known-divergence table": KNOWN_DIVERGENCES}


# markup=False: a string printed here is never read as rich markup (a label `[/bold]x` is data);
# the renderers pass every user string as Text besides (deploykit.report.escape).
stdout = Console(width=160, markup=False)
stderr = Console(stderr=True, width=160, markup=False)
