"""Backend registry and the facts each built-in backend declares about itself."""

from __future__ import annotations

import pytest

from deploykit import backends as registry
from deploykit.backends.base import BuildConfig
from deploykit.backends.torch_backend import torch_padding
from deploykit.errors import UsageError
from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec


def test_registry_knows_the_builtins_and_refuses_unknown_names():
    chosen, missing = registry.default_backends()
    assert {"reference", "onnx-reference", "ort-cpu"} <= set(chosen) <= set(registry.names())
    assert not {"ort-cuda", "torch-cuda"} & set(chosen + missing)  # CPU only
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
    fp32 = BuildConfig()
    assert backend.unsupported_reason(build_case(ConvTransposeSpec((1, 2, 3, 3), 2, 2, dtype="float64")), fp32).endswith(
        "no float64 ConvTranspose kernel")
    assert backend.unsupported_reason(build_case(ConvTransposeSpec((1, 2, 3, 3), 2, 2, dtype="float16")), fp32) is None
    assert "no tf32 build precision" in backend.unsupported_reason(build_case(ConvTransposeSpec((1, 2, 3, 3), 2, 2)), BuildConfig("tf32"))


def test_torch_padding_explains_what_torch_cannot_express():
    assert torch_padding(ConvTransposeSpec((1, 2, 4, 4), 2, 3, strides=2, pads=1)) == (1, 1)
    assert "asymmetric" in torch_padding(ConvTransposeSpec((1, 2, 4, 4), 2, 3, strides=2, auto_pad="SAME_UPPER"))
    assert "zero" in torch_padding(ConvTransposeSpec((1, 2, 4, 4), 2, 1, strides=2, auto_pad="SAME_UPPER"))
