"""Layer localisation: every ConvTranspose node -> its torch module -> one conformance run per config.

A decoder repeats the same layer configuration many times, so nodes are grouped by config id: the
engine runs once per distinct config and the report lists the nodes and modules that share it.
Module paths come from the parameters feeding each node's W and B (`named_parameters()` of the
exported module), which exporters keep verbatim; node names and metadata are only a fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from deploykit import backends as registry
from deploykit.execution.execute import Executor
from deploykit.onnxio.read import ConvTransposeNode, conv_transpose_nodes, graph_inputs

ROOT = "(root)"  # the path named_modules() gives the top module ("")


@dataclass
class LayerCheck:
    """One distinct config (or one node deploykit could not resolve) and its verdicts."""

    label: str | None
    config_id: str | None
    problem: str | None
    input_shape: list[int] | None = None
    nodes: list[str] = field(default_factory=list)
    module_paths: list[str | None] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.nodes)

    @property
    def unresolved(self) -> bool:
        return self.config_id is None

    def failures(self) -> list[dict]:
        return [r for r in self.results if r["verdict"] not in ("pass", "unsupported", "unavailable")]

    def as_dict(self) -> dict:
        return {
            "label": self.label, "config_id": self.config_id, "input_shape": self.input_shape, "problem": self.problem,
            "count": self.count,
            "nodes": self.nodes, "module_paths": self.module_paths, "results": self.results,
        }


def parameter_owners(module) -> dict[str, str]:
    """Parameter (or buffer) name as the exporters write it -> path of the module that owns it.

    `up.parametrizations.weight.original0` (parametrized weight_norm) belongs to `up`, not to the
    ParametrizationList that holds it; old-style `up.weight_g` / `up.weight_v` to `up`.
    """
    owners: dict[str, str] = {}
    named = list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
    for name, _ in named:  # buffers too: BigVGAN's anti-aliasing filters run F.conv_transpose1d on one
        owner = name.split(".parametrizations.", 1)[0] if ".parametrizations." in name else name.rpartition(".")[0]
        owners.setdefault(name, owner or ROOT)
    return owners


def module_path(found: ConvTransposeNode, owners: dict[str, str]) -> str | None:
    """The module that owns the node's W (else B) parameter; the file's own guess otherwise."""
    for name in found.parameters:
        if name in owners:
            return owners[name]
    return found.module_path


def _group_key(found: ConvTransposeNode) -> str:
    return found.spec.replace(name=None).id if found.spec is not None else f"unresolved:{found.index}"


def group_layers(found_nodes: list[ConvTransposeNode], owners: dict[str, str]) -> list[LayerCheck]:
    """One LayerCheck per distinct config, in graph order; each unresolved node stands alone."""
    groups: dict[str, LayerCheck] = {}
    for found in found_nodes:
        key = _group_key(found)
        if key not in groups:
            spec = found.spec.replace(name=None) if found.spec is not None else None
            problem = found.problem
            if spec is not None and not spec.is_valid:
                problem = "; ".join(spec.violations())
            groups[key] = LayerCheck(
                label=spec.label if spec else None, config_id=spec.id if spec else None, problem=problem,
                input_shape=list(spec.input_shape) if spec else None,
            )
        groups[key].nodes.append(found.name)
        groups[key].module_paths.append(module_path(found, owners))
    return list(groups.values())


def check_layers(model: onnx.ModelProto, inputs: tuple, backends: list[str], module=None) -> list[LayerCheck]:
    """Every ConvTranspose node -> spec (real input shape) -> conformance engine, once per config."""
    shapes = {gi.name: tuple(t.shape) for gi, t in zip(graph_inputs(model), inputs)}
    found_nodes = conv_transpose_nodes(model, shapes)
    layers = group_layers(found_nodes, parameter_owners(module) if module is not None else {})
    specs = {n.spec.replace(name=None).id: n.spec.replace(name=None) for n in found_nodes if n.spec is not None}
    layer_backends = [b for b in backends if b in registry.names()]
    executor = Executor()
    for layer in layers:
        if layer.config_id is None or layer.problem:
            continue
        for backend in layer_backends:
            result = executor.run(specs[layer.config_id], backend).as_dict()
            result.pop("spec", None)
            layer.results.append(result)
    return layers
