"""The text of a repro folder: `repro.py` (standalone: NumPy and the runtime only) and `ISSUE.md`.

The spec text quoted in ISSUE.md is read from the installed onnx package's own operator schema,
so the quote is the ConvTranspose text the model was built against, word for word.
"""

from __future__ import annotations

import textwrap

from deploykit.backends.base import ReproRecipe
from deploykit.op.spec import DEFAULT_OPSET, ConvTransposeSpec
from deploykit.repro.criterion import BOUND, Criterion
from deploykit.results.result import Result, Run

SCRIPT = '''"""{title}

Run in a virtual environment with only these packages:  pip install {pip}
    python repro.py
Exit code 1 while the runtime disagrees with the ONNX spec text (deploykit's verdict: {verdict}),
0 once it is fixed.  model.onnx is one ConvTranspose node; X.npy, W.npy and B.npy hold its
inputs, expected.npy the float64 answer of the ONNX formula, {judged_by}.  ISSUE.md says more.
"""

import sys
from pathlib import Path

import numpy as np
{imports}

HERE = Path(__file__).resolve().parent
RUNTIME = "{runtime}"
VERSION = {version}
DTYPE = "{dtype}"
FEEDS = {feeds}  # the graph inputs, in order
SPEC_INVALID = {invalid}  # the model breaks a rule of the ONNX spec: a runtime must refuse it
VIOLATIONS = "{violations}"


{run}


def load(name):
    """An input as the model's dtype (bfloat16 is stored as float32, exactly, and needs ml_dtypes)."""
    array = np.load(HERE / f"{{name}}.npy")
    if DTYPE == "bfloat16":
        import ml_dtypes

        return array.astype(ml_dtypes.bfloat16)
    return array.astype(DTYPE)


{compare}def main():
    print(f"{{RUNTIME}} {{VERSION}}, numpy {{np.__version__}}")
    feeds = {{name: load(name) for name in FEEDS}}
    try:
        actual = np.asarray(run(str(HERE / "model.onnx"), feeds))
    except ImportError:  # part of the runtime is not installed: that is no refusal, and no verdict
        raise
    except Exception as error:  # the runtime refused the model
        message = " ".join(str(error).split())[:600]
        if SPEC_INVALID:
            print(f"refused the spec-invalid model, as it should: {{message}}")
            return 0
        print(f"refused a valid model: {{type(error).__name__}}: {{message}}")
        return 1
    if SPEC_INVALID:
        print(f"ran a model the ONNX spec rules out ({{VIOLATIONS}}); output shape {{list(actual.shape)}}")
        return 1
    return compare(actual)


if __name__ == "__main__":
    sys.exit(main())
'''

#: compare() judging with the rounding-error bound (bound.npy): what a run without --atol/--rtol did
COMPARE_BOUND = '''def compare(actual):
    expected, bound = np.load(HERE / "expected.npy"), np.load(HERE / "bound.npy")
    print(f"expected shape {list(expected.shape)}, actual shape {list(actual.shape)}")
    if actual.shape != expected.shape:
        print("wrong output shape")
        return 1
    error = np.abs(actual.astype(np.float64) - expected)
    bad = ~(error <= bound)  # NaN counts as beyond the bound
    if not bad.any():
        print("matches the ONNX spec within the rounding-error bound: fixed")
        return 0
    worst = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(error, nan=np.inf), -1.0))), error.shape)
    print(f"{int(bad.sum())} of {error.size} outputs are beyond the rounding-error bound; at index {list(map(int, worst))}"
          f" expected {float(expected[worst])!r}, got {float(actual[worst])!r} (bound {float(bound[worst]):.3g})")
    if expected.size <= 32:
        print("expected", np.round(expected.ravel(), 6).tolist())
        print("actual  ", np.round(actual.astype(np.float64).ravel(), 6).tolist())
    return 1


'''

#: compare() judging with the run's --atol/--rtol (a format template for the two numbers)
COMPARE_TOLERANCE = '''ATOL, RTOL = {atol!r}, {rtol!r}  # the run's criterion: |actual - expected| <= ATOL + RTOL * |expected|


def compare(actual):
    expected = np.load(HERE / "expected.npy")
    print(f"expected shape {{list(expected.shape)}}, actual shape {{list(actual.shape)}}")
    if actual.shape != expected.shape:
        print("wrong output shape")
        return 1
    error = np.abs(actual.astype(np.float64) - expected)
    allowed = ATOL + RTOL * np.abs(expected)
    bad = ~(error <= allowed)  # NaN counts as beyond it
    if not bad.any():
        print(f"within atol={{ATOL:g}} rtol={{RTOL:g}} of the ONNX formula's float64 answer, the run's criterion: fixed")
        return 0
    worst = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(error, nan=np.inf), -1.0))), error.shape)
    print(f"{{int(bad.sum())}} of {{error.size}} outputs exceed atol={{ATOL:g}} rtol={{RTOL:g}}; at index {{list(map(int, worst))}}"
          f" expected {{float(expected[worst])!r}}, got {{float(actual[worst])!r}} (allowed {{float(allowed[worst]):.3g}})")
    if expected.size <= 32:
        print("expected", np.round(expected.ravel(), 6).tolist())
        print("actual  ", np.round(actual.astype(np.float64).ravel(), 6).tolist())
    return 1


'''


def _attribute_rows(spec: ConvTransposeSpec) -> list[str]:
    """The node's attributes exactly as the model writes them (read back from the file's node)."""
    from onnx import helper

    from deploykit.onnxio.write import build_case

    node = build_case(spec).model.graph.node[0]
    return [f"| `{a.name}` | `{helper.get_attribute_value(a)!r}` |".replace("b'", "'") for a in node.attribute]


def _quotes(spec: ConvTransposeSpec) -> list[str]:
    """The parts of the ConvTranspose text that decide this config."""
    import onnx

    schema = onnx.defs.get_schema("ConvTranspose", max(spec.opset, DEFAULT_OPSET))
    doc = " ".join((schema.doc or "").split())
    shape_rule = doc[doc.index("If the pads parameter"): doc.index("output_shape can also")].strip()
    quotes = [shape_rule]
    if spec.output_shape is not None:
        quotes.append(doc[doc.index("output_shape can also"):].strip())
    if spec.auto_pad != "NOTSET":
        quotes.append("auto_pad: " + schema.attributes["auto_pad"].description)
    if spec.auto_pad != "NOTSET" and any(spec.pads):
        quotes.append("pads: " + schema.attributes["pads"].description)
    if any(spec.output_padding) or any(op >= max(s, d) for op, s, d in zip(spec.output_padding, spec.strides, spec.dilations)):
        quotes.append("output_padding: " + schema.attributes["output_padding"].description)
    if spec.group > 1:
        quotes.append("W: " + " ".join(schema.inputs[1].description.split()))
    return quotes


def _expected(spec: ConvTransposeSpec, criterion: Criterion, result: Result) -> str:
    if not spec.is_valid:
        return f"The model breaks the spec ({'; '.join(spec.violations())}), so a runtime should refuse it."
    begin, end = spec.resolved_pads()
    return (f"Output shape {list(spec.output_full_shape)}: natural size {list(spec.natural_spatial)} per axis, "
            f"pads resolved to begin {list(begin)}, end {list(end)} (a negative pad is a zero extension). "
            "Values: the text defines ConvTranspose as the gradient of Conv; written out, with C/group input "
            "and M/group output channels per group g, Y[n, g*M/group + m, o] = B[g*M/group + m] + sum of "
            "X[n, g*C/group + c, i] * W[g*C/group + c, m, k] over c, and over every input position i and kernel "
            "tap k with o = i*stride - pads_begin + k*dilation on each spatial axis. "
            + _judged_by(criterion, result))


def _judged_by(criterion: Criterion, result: Result) -> str:
    """How the values are judged: as the run that found the result judged them."""
    if criterion.tolerance is None:
        return ("`expected.npy` holds that sum in float64, `bound.npy` the rounding error a correct "
                "float computation may add per element.")
    text = (f"`expected.npy` holds that sum in float64. The run that found this judged values with a fixed tolerance, "
            f"|actual - expected| <= atol + rtol * |expected| with {criterion.text}, not with the rounding error a correct "
            "float computation may make; `repro.py` judges the same way.")
    if result.verdict == "drift" and result.bound_ratio is not None:
        if result.bound_ratio <= 1:
            text += (f" Every element was within that rounding-error bound (bound_ratio {result.bound_ratio:.3g}): by the "
                     "ONNX text this is no error, only a miss of the tolerance the run was given.")
        else:
            text += f" The largest error was also {result.bound_ratio:.3g}x that rounding-error bound."
    return text


def _actual(result: Result) -> str:
    """The runtime's own message, in a code block: it is data (`<!--` in it must not hide the issue)."""
    from deploykit.report.escape import md_block

    shape = f"\n\nOutput shape {result.actual_shape}." if result.actual_shape else ""
    return f"{md_block(result.reason)}{shape}" if result.reason else shape.strip()


def _environment_lines(result: Result, recipe: ReproRecipe, env: dict) -> list[str]:
    from deploykit.report.escape import md

    packages = {name: md(version) for name, version in (env.get("packages") or {}).items()}
    gpus = md(", ".join(env.get("gpus") or []) or "none")
    return [
        f"- {recipe.runtime}: {md(result.backend_version or 'unknown')}",
        f"- onnx (model written with): {packages.get('onnx') or 'unknown'}; numpy {packages.get('numpy') or 'unknown'}",
        f"- Python {md(env.get('python', 'unknown'))}; {md(env.get('platform') or env.get('os', 'unknown'))}",
        f"- CPU: {md(env.get('cpu', 'unknown'))}; GPU: {gpus}",
        f"- found by deploykit {packages.get('deploykit') or ''}".rstrip() + f" (verdict `{result.verdict}`, config `{result.config_id}`)",
    ]


def issue_body(spec: ConvTransposeSpec, result: Result, recipe: ReproRecipe, run: Run | None, env: dict,
               criterion: Criterion | None = None, happens: str | None = None, environment: list[str] | None = None) -> str:
    """The issue text; `happens` and `environment` replace the runtime's message and the machine's
    record where the folder is written from a known divergence (no run, bytes the same on every machine)."""
    from deploykit.report.escape import md

    criterion = criterion or BOUND
    w_kind = "graph input" if spec.weights_as_inputs else "initializer"
    lines = [
        f"# {md(issue_title(spec, result, recipe, criterion))}", "",
        "## What happens", "", _actual(result) if happens is None else happens, "",
        f"## Minimal model (one ConvTranspose node, opset {spec.opset}, {spec.dtype})", "",
        "| | |", "|---|---|",
        f"| X | `{list(spec.input_shape)}` |", f"| W ({w_kind}) | `{list(spec.weight_shape)}` |",
        f"| B | `{[spec.out_channels] if spec.bias else 'none'}` |", *_attribute_rows(spec), "",
        "## Expected, per the ONNX ConvTranspose text", "",
        *[line for quote in _quotes(spec) for line in (textwrap.fill(quote, 100, initial_indent="> ", subsequent_indent="> "), "")],
        _expected(spec, criterion, result), "",
        "## Reproduce", "", "```", f"pip install {install_line(spec, recipe)}", "python repro.py   # exit code 1 while the problem is present", "```", "",
        "## Environment", "", *(_environment_lines(result, recipe, env) if environment is None else environment), "",
    ]
    return "\n".join(lines)


def script_text(spec: ConvTransposeSpec, result: Result, recipe: ReproRecipe, outputs: list[str],
                criterion: Criterion = BOUND) -> str:
    feeds = [] if recipe.reads_files else (["X", "W"] + (["B"] if spec.bias else []) if spec.weights_as_inputs else ["X"])
    if criterion.tolerance is None:
        compare, judged_by = COMPARE_BOUND, "bound.npy the largest rounding error\na correct float computation can make per element"
    else:
        compare = COMPARE_TOLERANCE.format(atol=criterion.tolerance.atol, rtol=criterion.tolerance.rtol)
        judged_by = (f"judged as the run that found it judged:\n|actual - expected| <= atol + rtol * |expected| with {criterion.text}"
                     " (the run's --atol/--rtol)")
    return SCRIPT.format(
        title=issue_title(spec, result, recipe, criterion), pip=install_line(spec, recipe), verdict=result.verdict,
        imports=recipe.imports, runtime=recipe.runtime, version=recipe.version, dtype=spec.dtype, feeds=feeds,
        invalid=not spec.is_valid, violations="; ".join(spec.violations()), run=recipe.run.rstrip(),
        compare=compare, judged_by=judged_by,
    )


def install_line(spec: ConvTransposeSpec, recipe: ReproRecipe) -> str:
    """What `pip install` needs: NumPy, the runtime, and ml_dtypes for bfloat16 (NumPy has none)."""
    return f"numpy {recipe.pip}" + (" ml_dtypes" if spec.dtype == "bfloat16" else "")


def issue_title(spec: ConvTransposeSpec, result: Result, recipe: ReproRecipe, criterion: Criterion = BOUND) -> str:
    what = {
        "drift": "computes wrong values", "nonfinite": "returns NaN/Inf", "shape-mismatch": "returns the wrong output shape",
        "rejected": "refuses a valid model", "accepted-invalid": "runs a model the ONNX spec rules out",
        "crash": "aborts the process",
    }[result.verdict]
    if result.verdict == "drift" and criterion.tolerance is not None:
        what = f"differs from the float64 answer by more than {criterion.text}"
    runtime = f"{recipe.runtime} {result.backend_version}" if result.backend_version else recipe.runtime
    return f"{runtime}: ConvTranspose {what} ({attribute_summary(spec)})"


def attribute_summary(spec: ConvTransposeSpec) -> str:
    """The config in ONNX's own words, defaults left out: what a maintainer reads in a title."""
    defaults = ConvTransposeSpec(input_shape=spec.input_shape, out_channels=spec.out_channels, kernel_shape=spec.kernel_shape)
    parts = [f"{spec.rank}-D X{list(spec.input_shape)}", f"kernel_shape={list(spec.kernel_shape)}"]
    for name in ("strides", "pads", "output_padding", "dilations", "group", "auto_pad", "output_shape"):
        value = getattr(spec, name)
        if value != getattr(defaults, name):
            parts.append(f"{name}={list(value) if isinstance(value, tuple) else value}")
    if spec.dtype != "float32":
        parts.append(spec.dtype)
    return ", ".join(parts)
