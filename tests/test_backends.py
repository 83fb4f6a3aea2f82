"""Backend registry and the facts each built-in backend declares about itself."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit import backends as registry
from deploykit.backends.torch_backend import torch_padding
from deploykit.errors import UsageError
from deploykit.onnxgen import build_case
from deploykit.reference import run_spec
from deploykit.spec import ConvTransposeSpec


def test_registry_knows_the_builtins_and_refuses_unknown_names():
    assert set(registry.DEFAULT_BACKENDS) <= set(registry.names())
    with pytest.raises(UsageError, match="unknown backend 'nope'; known backends: reference"):
        registry.get("nope")
    assert registry.parse("ort-cpu, reference") == ["ort-cpu", "reference"]


def test_env_registration_and_a_broken_plugin_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("DEPLOYKIT_BACKENDS", "ref2=deploykit.backends.reference:ReferenceBackend,bad=no.such.module:X")
    assert registry.get("ref2").probe().available
    with pytest.raises(UsageError, match="backend 'bad' .* failed to load"):
        registry.get("bad")


def test_ort_cpu_declares_its_missing_kernels():
    backend = registry.get("ort-cpu")
    assert backend.unsupported_reason(ConvTransposeSpec((1, 2, 3, 3), 2, 2, dtype="float64")).endswith("no float64 ConvTranspose kernel")
    assert backend.unsupported_reason(ConvTransposeSpec((1, 2, 3, 3), 2, 2, dtype="float16")) is None


def test_torch_padding_explains_what_torch_cannot_express():
    assert torch_padding(ConvTransposeSpec((1, 2, 4, 4), 2, 3, strides=2, pads=1)) == (1, 1)
    assert "asymmetric" in torch_padding(ConvTransposeSpec((1, 2, 4, 4), 2, 3, strides=2, auto_pad="SAME_UPPER"))
    assert "zero" in torch_padding(ConvTransposeSpec((1, 2, 4, 4), 2, 1, strides=2, auto_pad="SAME_UPPER"))


def test_torch_cpu_float16_rounds_before_adding_the_bias():
    """Pins the measurement behind TorchCpuBackend.rounds_before_bias."""
    torch = pytest.importorskip("torch")
    spec = ConvTransposeSpec.from_dict(
        {"input_shape": [1, 8, 3, 3, 2], "out_channels": 8, "kernel_shape": [1, 1, 1], "pads": 1,
         "output_padding": 1, "dilations": 2, "group": 2, "dtype": "float16"}
    )
    case = build_case(spec)
    x, w, b = (torch.from_numpy(a) for a in (case.x, case.w, case.b))
    options = dict(stride=1, padding=1, output_padding=1, groups=2, dilation=2)
    with_bias = torch.nn.functional.conv_transpose3d(x, w, b, **options)
    then_bias = torch.nn.functional.conv_transpose3d(x, w, None, **options) + b.view(1, -1, 1, 1, 1)
    assert torch.equal(with_bias, then_bias)
    reference = run_spec(spec, case.x, case.w, case.b)
    single_rounding = (
        torch.nn.functional.conv_transpose3d(x.float(), w.float(), b.float(), **options).half().double().numpy()
    )
    half_ulp = 2.0**-11 * np.abs(reference) * (1 + 1e-3)  # one float16 rounding of the exact value
    assert (np.abs(single_rounding - reference) <= half_ulp).all()
    assert (np.abs(with_bias.double().numpy() - reference) > half_ulp).any()
