"""Dynamic axes per input: `--dynamic-axis INPUT:AXIS=NAME`, and `AXIS=NAME` on the inputs that have it.

A decoder with inputs at different resolutions (compressai's hyperprior: y_hat and z_hat) needs
one symbol per input; one symbol on both would declare them equal.  The exports run the real
exporters (dynamo and TorchScript) and read the dim_param names the ONNX file holds per input.
"""

from __future__ import annotations

import json
import textwrap

import onnx
import pytest
from helpers import assert_usage_error, deploykit

from deploykit.errors import UsageError
from deploykit.export.dynamic import AxisRequest, parse_request, resolve
from deploykit.export.exporter import default_verify_backends
from deploykit.export.verify import second_size_inputs

torch = pytest.importorskip("torch")

DECODERS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Hyperprior(nn.Module):
        \"\"\"compressai-style: z_hat (2x2) goes through the hyper-synthesis (x4) to join y_hat (8x8).\"\"\"

        def __init__(self):
            super().__init__()
            self.hyper = nn.Sequential(
                nn.ConvTranspose2d(4, 8, 5, stride=2, padding=2, output_padding=1), nn.ReLU(),
                nn.ConvTranspose2d(8, 8, 5, stride=2, padding=2, output_padding=1),
            )
            self.synth = nn.ConvTranspose2d(16, 3, 5, stride=2, padding=2, output_padding=1)

        def forward(self, y_hat, z_hat):
            return self.synth(torch.cat([y_hat, self.hyper(z_hat)], dim=1))

    def hyperprior():
        torch.manual_seed(0)
        return Hyperprior().eval(), (torch.randn(1, 8, 8, 8), torch.randn(1, 4, 2, 2))

    class Conditioned(nn.Module):
        \"\"\"An image and a conditioning vector (rank 2): only the image has axes 2 and 3.\"\"\"

        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)
            self.film = nn.Linear(6, 4)

        def forward(self, x, c):
            return self.up(x + self.film(c)[:, :, None, None])

    def conditioned():
        torch.manual_seed(0)
        return Conditioned().eval(), (torch.randn(1, 4, 5, 5), torch.randn(1, 6))
    """
)
Y, Z = torch.zeros(1, 8, 8, 8), torch.zeros(1, 4, 2, 2)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decoders")
    (folder / "decoders.py").write_text(DECODERS)
    return folder


def _dims(path) -> dict[str, list]:
    """Each graph input's shape as the file declares it: dim_param names, else sizes."""
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(str(path)).graph.input}


# ----- resolution, without an exporter --------------------------------------------------------
def test_per_input_axes_by_onnx_name_or_position():
    requests = [parse_request("input_0:2=h"), parse_request("input_0:3=w"), parse_request("1:2=hz"), parse_request("1:3=wz")]
    assert resolve(requests, (Y, Z)) == {0: {2: "h", 3: "w"}, 1: {2: "hz", 3: "wz"}}
    assert resolve([parse_request("input:3=time")], (torch.zeros(1, 2, 3, 4),)) == {0: {3: "time"}}


def test_an_axis_for_every_input_skips_the_inputs_without_it():
    image, vector = torch.zeros(1, 4, 5, 5), torch.zeros(1, 6)
    assert resolve([parse_request("2=h"), parse_request("3=w")], (image, vector)) == {0: {2: "h", 3: "w"}}
    missing = r"--dynamic-axis 4=d: there is no axis 4 on any input \(input_0 is 1x4x5x5, input_1 is 1x6\)"
    with pytest.raises(UsageError, match=missing):
        resolve([parse_request("4=d")], (image, vector))


def test_one_symbol_for_inputs_of_different_sizes_is_refused_with_the_per_input_options():
    with pytest.raises(UsageError) as refused:
        resolve([parse_request("2=h")], (Y, Z))
    assert str(refused.value) == (
        "--dynamic-axis 2=h: one symbol 'h' for axes of different sizes (input_0 axis 2 is 8, input_1 axis 2 is 2);"
        " name them apart: --dynamic-axis input_0:2=h --dynamic-axis input_1:2=h_1"
    )
    with pytest.raises(UsageError, match="one symbol 'h' for axes of different sizes"):  # named per input, still one symbol
        resolve([parse_request("0:2=h"), parse_request("1:2=h")], (Y, Z))
    # The same sizes may share a symbol: a batch, or square images.
    assert resolve([AxisRequest(0, "batch"), parse_request("2=s"), parse_request("3=s")], (Y, Y)) == {
        0: {0: "batch", 2: "s", 3: "s"}, 1: {0: "batch", 2: "s", 3: "s"}}


@pytest.mark.parametrize("texts, message", [
    (["input_2:2=h"], "--dynamic-axis input_2:2=h: no input 'input_2'; the inputs are input_0, input_1 (positions 0 to 1)"),
    (["5:2=h"], "no input '5'"),
    (["1:4=h"], "--dynamic-axis 1:4=h: input_1 is 1x4x2x2, which has no axis 4 (rank 4)"),
    (["2=h", "0:2=g"], "--dynamic-axis 0:2=g: axis 2 is already dynamic as 'h' on input_0"),
])
def test_a_per_input_axis_that_names_nothing_is_a_usage_error(texts, message):
    with pytest.raises(UsageError) as refused:
        resolve([parse_request(text) for text in texts], (Y, Z))
    assert message in str(refused.value)


@pytest.mark.parametrize("text", ["h", "2", "2=", ":2=h", "a:b:2=h", "x:\u00b2=h", "input_0:-1=h"])
def test_a_malformed_dynamic_axis_is_a_usage_error(text):
    with pytest.raises(UsageError, match="must be AXIS=NAME or INPUT:AXIS=NAME"):
        parse_request(text)


def test_the_second_size_doubles_each_input_and_keeps_their_ratio():
    class Hyper(torch.nn.Module):
        def forward(self, y, z):
            return y[:, :4] + torch.nn.functional.interpolate(z, scale_factor=4)

    grown, why_not = second_size_inputs(Hyper(), (Y, Z), {0: {2: "h", 3: "w"}, 1: {2: "hz", 3: "wz"}})
    assert why_not == "" and [list(t.shape) for t in grown] == [[1, 8, 16, 16], [1, 4, 4, 4]]


# ----- real exports ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_a_hyperprior_decoder_exports_with_a_symbol_per_input_and_verifies_a_second_size(decoders, tmp_path, exporter):
    """y_hat's size written as an expression of z_hat's symbol: every runtime can relate the two
    (tract refuses two unrelated symbols that the Concat ties together)."""
    out, report_path = tmp_path / "hyper.onnx", tmp_path / "hyper.json"
    proc = deploykit(
        "export", "decoders:hyperprior", "--exporter", exporter, "-o", str(out), "--json", str(report_path),
        "--dynamic-axis", "input_0:2=4*hz", "--dynamic-axis", "input_0:3=4*wz",
        "--dynamic-axis", "1:2=hz", "--dynamic-axis", "1:3=wz",
        cwd=decoders, env={"PYTHONPATH": str(decoders)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _dims(out) == {"input_0": [1, 8, "4*hz", "4*wz"], "input_1": [1, 4, "hz", "wz"]}
    report = json.loads(report_path.read_text())
    assert report["dynamic_axes"] == {"input_0": {"2": "4*hz", "3": "4*wz"}, "input_1": {"2": "hz", "3": "wz"}}
    assert "dynamic axes: input_0: axis 2=4*hz, axis 3=4*wz; input_1: axis 2=hz, axis 3=wz" in proc.stdout
    backends = default_verify_backends()
    rows = [(o["backend"], o["input_shapes"], o["verdict"]) for o in report["outputs"]]
    assert rows == [(b, [[1, 8, 8, 8], [1, 4, 2, 2]], "pass") for b in backends] + [
        (b, [[1, 8, 16, 16], [1, 4, 4, 4]], "pass") for b in backends], rows


@pytest.mark.slow
def test_one_symbol_on_a_hyperprior_decoder_is_refused_before_the_export(decoders, tmp_path):
    out = tmp_path / "hyper.onnx"
    proc = deploykit("export", "decoders:hyperprior", "--dynamic-axis", "2=h", "-o", str(out), cwd=decoders,
                     env={"PYTHONPATH": str(decoders)})
    assert_usage_error(proc, "one symbol 'h' for axes of different sizes", "--dynamic-axis input_1:2=h_1")
    assert not out.exists()


@pytest.mark.slow
def test_an_axis_some_inputs_lack_makes_the_inputs_that_have_it_dynamic(decoders, tmp_path):
    out, report_path = tmp_path / "cond.onnx", tmp_path / "cond.json"
    proc = deploykit(
        "export", "decoders:conditioned", "--exporter", "torchscript", "-o", str(out), "--json", str(report_path),
        "--dynamic-batch", "--dynamic-axis", "2=h", "--dynamic-axis", "3=w", "--verify-backends", "ort-cpu",
        cwd=decoders, env={"PYTHONPATH": str(decoders)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _dims(out) == {"input_0": ["batch", 4, "h", "w"], "input_1": ["batch", 6]}
    rows = [(o["input_shapes"], o["verdict"]) for o in json.loads(report_path.read_text())["outputs"]]
    assert rows == [([[1, 4, 5, 5], [1, 6]], "pass"), ([[2, 4, 10, 10], [2, 6]], "pass")], rows
