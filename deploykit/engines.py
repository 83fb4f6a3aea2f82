"""TensorRT engine building (minimal: one optimisation profile, optional FP16).

Written against the TensorRT 10 Python API (Builder, OnnxParser, BuilderConfig,
build_serialized_network).  This path has never run on real TensorRT; `availability()` keeps it
from being reached without both the package and a GPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from deploykit.environment import package_version


def availability() -> str | None:
    """None when an engine can be built here, else the one-line reason."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)"
    if not shutil.which("nvidia-smi"):
        return f"TensorRT {package_version('tensorrt')} is installed but no NVIDIA GPU is visible"
    return None


def build_engine(
    model_bytes: bytes,
    output: Path,
    input_shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] | None = None,
    fp16: bool = False,
    workspace_bytes: int = 1 << 30,
) -> Path:
    """Parse the ONNX model and serialise an engine to `output`.

    `input_shapes` maps dynamic inputs to (min, opt, max) shapes for one optimisation profile.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser refused the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if input_shapes:
        profile = builder.create_optimization_profile()
        for name, (smallest, optimal, largest) in input_shapes.items():
            profile.set_shape(name, smallest, optimal, largest)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build an engine for this model (see the TensorRT log above)")
    output.write_bytes(bytes(serialized))
    return output
