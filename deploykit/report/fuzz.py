"""`deploykit conformance fuzz` output: one line per failure class, and the `--json` records."""

from __future__ import annotations

from deploykit.fuzz.classes import FailureClass
from deploykit.report.escape import one_line


def minimal_config(spec: dict) -> str:
    """The config as a maintainer reads it: the label, the shapes and the auto_pad the label leaves
    out, and what makes a spec-invalid config invalid where the label cannot show it (pads beside
    auto_pad)."""
    from deploykit.op.spec import ConvTransposeSpec

    parsed = ConvTransposeSpec.from_dict(spec)
    text = f"{parsed.label} X{list(parsed.input_shape)} M={parsed.out_channels}"
    if parsed.auto_pad != "NOTSET" and parsed.output_shape is not None:  # the label shows only output_shape
        text += f" auto_pad={parsed.auto_pad}"
    if parsed.auto_pad != "NOTSET" and any(parsed.pads):
        text += f" pads={list(parsed.pads)}"
    if not parsed.is_valid:
        text += f" [spec-invalid: {'; '.join(parsed.violations())}]"
    return text


def class_lines(classes: list[FailureClass], shrunk: set) -> list[str]:
    """`NEW` or the known divergence's id, then backend, verdict, smallest config and signature.

    One line each, with invisible characters written out: the signature is a runtime's own message."""
    lines = []
    for found in classes:
        key = found.key
        tag = key.known_divergence or "NEW"
        note = "" if key in shrunk else ", not shrunk: the smallest config seen"
        lines.append(one_line(f"{tag}  {key.backend}  {key.verdict}  {minimal_config(found.minimal.spec)}  -- {key.signature}"
                              f"  ({found.count} config(s), config {found.minimal.config_id}{note})"))
    return lines


def classes_json(classes: list[FailureClass], shrunk: set) -> list[dict]:
    return [{**found.as_dict(), "shrunk": found.key in shrunk} for found in classes]
