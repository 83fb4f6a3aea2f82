"""Backend registry: a name -> backend class, built-ins plus the `deploykit.backends` entry points.

Built-ins are listed as "module:Class" strings so that importing the registry imports no runtime;
a third-party package adds a backend with an entry point in the same form, and nothing else in
deploykit changes.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from deploykit.backends.base import Availability, Backend, Runner
from deploykit.errors import UsageError

ENTRY_POINT_GROUP = "deploykit.backends"

BUILTIN: dict[str, str] = {
    "reference": "deploykit.backends.reference:ReferenceBackend",
    "onnx-reference": "deploykit.backends.onnx_reference:OnnxReferenceBackend",
    "ort-cpu": "deploykit.backends.ort:OrtCpuBackend",
    "torch-cpu": "deploykit.backends.torch_backend:TorchCpuBackend",
    "openvino-cpu": "deploykit.backends.openvino:OpenVinoCpuBackend",
    "tract-cpu": "deploykit.backends.tract:TractCpuBackend",
    "tvm-cpu": "deploykit.backends.tvm:TvmCpuBackend",
    "tinygrad-cpu": "deploykit.backends.tinygrad:TinygradCpuBackend",
    "ort-cuda": "deploykit.backends.ort:OrtCudaBackend",
    "torch-cuda": "deploykit.backends.torch_backend:TorchCudaBackend",
    "tensorrt": "deploykit.backends.tensorrt.runner:TensorRtBackend",
}


def _registered() -> dict[str, str]:
    """Built-ins, then entry points, then DEPLOYKIT_BACKENDS="name=module:Class,..." (a backend
    in a plain module, no packaging needed; the harness's worker processes inherit it)."""
    found = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    for item in os.environ.get("DEPLOYKIT_BACKENDS", "").split(","):
        name, _, target = item.partition("=")
        if name.strip() and ":" in target:
            found.setdefault(name.strip(), target.strip())
    return found


def names() -> list[str]:
    return list(_registered())


def get(name: str) -> Backend:
    """Instantiate a backend by name; an unknown name is a usage error listing the known ones."""
    target = _registered().get(name)
    if target is None:
        raise UsageError(f"unknown backend {name!r}; known backends: {', '.join(names())}")
    module_name, _, class_name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)()
    except (ImportError, AttributeError) as error:
        raise UsageError(f"backend {name!r} ({target}) failed to load: {error}") from None


def deployment_targets() -> list[str]:
    """Every registered backend that is a runtime users deploy to (not an oracle such as the
    reference), from each backend's declared capabilities: what lint checks by default."""
    targets = []
    for name in names():
        try:
            if not get(name).capabilities.reference:
                targets.append(name)
        except UsageError:  # a broken plugin: `deploykit backends` says why
            continue
    return targets


def default_backends() -> tuple[list[str], list[str]]:
    """What `conformance run` uses when --backends is not given: every available CPU backend that
    declares itself fit for a default run (fast enough for the shipped matrices), and, apart, the
    ones left out because they are not installed (so the user can be told how to add them)."""
    chosen: list[str] = []
    missing: list[str] = []
    for name in names():
        try:
            backend = get(name)
        except UsageError:  # a broken plugin: `deploykit backends` says why
            continue
        if backend.device != "cpu" or not backend.capabilities.in_default_run:
            continue
        (chosen if backend.probe().available else missing).append(name)
    return chosen, missing


def require_available(names: list[str], option: str) -> None:
    """A backend the user named must run on this machine: a run that silently reports it
    `unavailable` and exits 0 would let a CI job that asked for a GPU backend go green."""
    for name in names:
        availability = get(name).probe()
        if not availability.available:
            raise UsageError(f"{option}: {name} is not available on this machine: {availability.reason}")


def parse(csv: str | None) -> list[str]:
    """Names from a comma-separated --backends value, checked against the registry."""
    if csv is None:
        return default_backends()[0]
    requested = [part.strip() for part in csv.split(",") if part.strip()]
    if not requested:
        raise UsageError(f"--backends {csv!r} names no backend; known backends: {', '.join(names())}")
    known = names()
    for name in requested:
        if name not in known:
            raise UsageError(f"unknown backend {name!r}; known backends: {', '.join(known)}")
    return requested


__all__ = ["Availability", "Backend", "Runner", "get", "names", "parse", "require_available", "default_backends", "deployment_targets", "BUILTIN"]
