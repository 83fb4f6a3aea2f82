"""The `tensorrt` backend, engine profiles, the engine cache, `export --engine` and ci/gpu-check.sh.

TensorRT cannot be installed where these tests usually run, so everything around it is tested
here with the real pieces that do install: Polygraphy's own loader classes and logger (checked,
never called into TensorRT), the CUDA driver's C API through a small stand-in library compiled
from the C below, deploykit's bound on emulated outputs, and the command line in subprocesses.
The tests marked `gpu` build and run real engines; elsewhere they skip with the probe's reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import emulation
import ml_dtypes
import numpy as np
import pytest
from helpers import ROOT, assert_usage_error, backend_rows, deploykit

from deploykit import backends as registry
from deploykit.backends.base import Availability, BuildConfig
from deploykit.backends.tensorrt import cuda_driver, engines
from deploykit.backends.tensorrt.cache import BuildHost, EngineCache, engine_key
from deploykit.backends.tensorrt.profiles import PROFILE_ENVIRONMENT, chosen_profile, known_profiles, load_profile
from deploykit.backends.tensorrt.runner import TensorRtBackend, TensorRtRunner
from deploykit.errors import UsageError
from deploykit.execution.execute import Executor, run_backend
from deploykit.onnxio.write import build_case
from deploykit.op.bound import OneSum
from deploykit.op.judging import judge_output
from deploykit.op.reference import ExactAnswer
from deploykit.op.spec import ConvTransposeSpec

LAYER = ConvTransposeSpec((1, 4, 5, 5), 3, (3, 3), strides=2, pads=1)
HOST = BuildHost("10.13.0.35", "0.53.6", "NVIDIA H100 80GB HBM3", "9.0")
GPU_CHECK = ROOT / "ci" / "gpu-check.sh"

FAKE_LIBCUDA = r"""
#include <stdlib.h>
#include <string.h>
static int setting(const char *name, int fallback) { const char *v = getenv(name); return v ? atoi(v) : fallback; }
int cuInit(unsigned int flags) { return setting("FAKE_CUDA_INIT", 0); }
int cuGetErrorName(int error, const char **name) {
    if (error == 100) { *name = "CUDA_ERROR_NO_DEVICE"; return 0; }
    return 1;
}
int cuDeviceGetCount(int *count) { *count = setting("FAKE_CUDA_COUNT", 1); return 0; }
int cuDeviceGet(int *device, int ordinal) { *device = ordinal; return 0; }
int cuDeviceGetName(char *name, int length, int device) { strncpy(name, "NVIDIA H100 80GB HBM3", length); return 0; }
int cuDeviceGetAttribute(int *value, int attribute, int device) {
    *value = attribute == 75 ? 9 : attribute == 76 ? 0 : -1;
    return 0;
}
"""


def _polygraphy():
    return pytest.importorskip("polygraphy.backend.trt", reason="polygraphy is not installed (pip install polygraphy)")


@pytest.fixture(scope="session")
def fake_libcuda(tmp_path_factory) -> Path:
    """A stand-in for the NVIDIA driver's libcuda.so.1 with the six calls deploykit makes."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the libcuda stand-in")
    folder = tmp_path_factory.mktemp("libcuda")
    (folder / "fake.c").write_text(FAKE_LIBCUDA)
    library = folder / "libcuda.so.1"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(folder / "fake.c")], check=True)
    return library


@pytest.fixture
def driver(monkeypatch, fake_libcuda):
    """deploykit.backends.tensorrt.cuda_driver loads the stand-in (its answer is cached per process: cleared here)."""
    monkeypatch.setattr(cuda_driver, "DRIVER_LIBRARY", str(fake_libcuda))
    cuda_driver.visible_device.cache_clear()
    yield
    cuda_driver.visible_device.cache_clear()


@pytest.fixture
def no_driver(monkeypatch, tmp_path):
    monkeypatch.setattr(cuda_driver, "DRIVER_LIBRARY", str(tmp_path / "libcuda.so.1"))
    cuda_driver.visible_device.cache_clear()
    yield
    cuda_driver.visible_device.cache_clear()


@pytest.fixture
def tensorrt_module(monkeypatch):
    """An importable `tensorrt` with a version and nothing else: enough for the probe and the cache
    key, which only read the version; any real TensorRT call would fail."""
    module = types.ModuleType("tensorrt")
    module.__version__ = HOST.tensorrt
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


# --- engine profiles ----------------------------------------------------------------------------


def test_shipped_profiles_load_and_differ_where_the_gpus_do():
    assert known_profiles() == ["a100", "default", "h100", "t4"]
    h100, t4, default = load_profile("h100"), load_profile("t4"), load_profile("default")
    assert (h100.builder_optimization_level, h100.workspace, h100.cuda_graphs) == (5, 8 << 30, True)
    assert h100.shapes.batch.max == 64 and h100.gpus == ("H100", "H200")
    assert t4.precisions == ("fp32", "fp16")  # Turing: no TF32, no bfloat16
    assert default.builder_optimization_level is None and default.workspace is None and not default.gpus
    assert h100.gpu_mismatch("NVIDIA H200") is None
    assert h100.gpu_mismatch("NVIDIA A100-SXM4-80GB") == "engine profile h100 is for H100, H200 GPUs, this GPU is NVIDIA A100-SXM4-80GB"


def test_a_broken_profile_is_one_line_naming_every_bad_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("builder_optimization_level: 7\nworkspace: lots\nprecisions: [fp8]\ncuda_graphs: 'yes'\n"
                    "shapes: {batch: {min: 4, opt: 2, max: 8}, inputs: {X: {min: [1, 2], opt: [1], max: [1, 2]}}}\nname: x\n")
    with pytest.raises(UsageError) as error:
        load_profile(str(path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"engine profile {path}: ")
    for part in ("builder_optimization_level: must be less than or equal to 5, got 7",
                 "workspace: must be a size such as 512M or 8G, got 'lots'", "precisions[0]: unknown precision 'fp8'",
                 "cuda_graphs: must be a valid boolean, got 'yes'", "shapes.batch: needs min <= opt <= max, got 4, 2, 8",
                 "shapes.inputs.X: min, opt and max need one rank", "name: unknown key"):
        assert part in message
    with pytest.raises(UsageError, match=r"^unknown engine profile 'h200'; known: a100, default, h100, t4 \(in "):
        load_profile("h200")


def test_profile_choice_and_folder_override(tmp_path, monkeypatch):
    monkeypatch.delenv(PROFILE_ENVIRONMENT, raising=False)
    assert chosen_profile(None) == "default" and chosen_profile("h100") == "h100"
    monkeypatch.setenv(PROFILE_ENVIRONMENT, "a100")
    assert chosen_profile(None) == "a100" and chosen_profile("t4") == "t4"
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "l4.yaml").write_text("precisions: [fp32, fp16]\nworkspace: 512MiB\n")
    monkeypatch.setenv("DEPLOYKIT_ENGINES_DIR", str(tmp_path))
    assert known_profiles() == ["l4"] and load_profile("l4").workspace == 512 << 20


# --- plans: precision -> CreateConfig, strong typing, shapes ----------------------------------------


@pytest.mark.parametrize("precision, flags", [
    ("fp32", {"tf32": False, "fp16": False, "bf16": False}),
    ("tf32", {"tf32": True, "fp16": False, "bf16": False}),
    ("fp16", {"tf32": False, "fp16": True, "bf16": False}),
    ("bf16", {"tf32": False, "fp16": False, "bf16": True}),
])
def test_a_float32_model_maps_each_precision_to_createconfig_flags(precision, flags):
    plan = engines.plan_engine(build_case(LAYER).model, precision, load_profile("h100"))
    assert plan.create_config_kwargs() == {**flags, "builder_optimization_level": 5}
    assert not plan.strongly_typed and plan.workspace_bytes == 8 << 30 and plan.shapes == ()


def test_float16_and_bfloat16_models_are_strongly_typed_without_narrow_flags():
    h100 = load_profile("h100")
    for dtype, own, other in (("float16", "fp16", "bf16"), ("bfloat16", "bf16", "fp16")):
        model = build_case(LAYER.replace(dtype=dtype, opset=22)).model
        for precision in ("fp32", own):
            plan = engines.plan_engine(model, precision, h100)
            assert plan.strongly_typed and not (plan.fp16 or plan.bf16 or plan.tf32), (dtype, precision)
        assert engines.plan_engine(model, "tf32", h100).tf32
        with pytest.raises(UsageError, match=f"a {dtype} model is built strongly typed and computes in {dtype}; {other} does not apply"):
            engines.plan_engine(model, other, h100)
    with pytest.raises(UsageError, match="TensorRT has no float64 tensors"):
        engines.plan_engine(build_case(LAYER.replace(dtype="float64")).model, "fp32", h100)
    with pytest.raises(UsageError, match=r"engine profile t4 has no tf32 build precision \(it offers fp32, fp16\)"):
        engines.plan_engine(build_case(LAYER).model, "tf32", load_profile("t4"))


def test_tensorrt_11_lowers_no_float32_model(driver, tensorrt_module):
    """TensorRT 11 removed weakly typed networks and the FP16/BF16 builder flags: fp16/bf16 on a
    float32 model are unsupported there, not a builder error; strongly typed models still build."""
    h100, float32 = load_profile("h100"), build_case(LAYER).model
    with pytest.raises(UsageError, match="TensorRT 11.0.1 builds strongly typed networks only: a float32 model runs in float32"):
        engines.plan_engine(float32, "fp16", h100, "11.0.1")
    assert engines.plan_engine(float32, "tf32", h100, "11.0.1").tf32 and engines.plan_engine(float32, "fp16", h100, "10.13.0").fp16
    assert engines.plan_engine(build_case(LAYER.replace(dtype="float16")).model, "fp16", h100, "11.0.1").strongly_typed
    tensorrt_module.__version__ = "11.0.1"
    assert TensorRtBackend().unsupported_reason(build_case(LAYER), BuildConfig("bf16")).startswith("TensorRT 11.0.1 builds strongly typed")
    assert TensorRtBackend().unsupported_reason(build_case(LAYER), BuildConfig("tf32")) is None


def test_dynamic_axes_take_their_range_from_the_profile(tmp_path):
    dynamic = build_case(LAYER, dynamic_batch=True).model
    plan = engines.plan_engine(dynamic, "fp32", load_profile("h100"))
    assert plan.shapes == (("X", (1, 4, 5, 5), (8, 4, 5, 5), (64, 4, 5, 5)),)
    profile = load_profile("default").model_copy(update={"shapes": load_profile("default").shapes.model_copy(update={"batch": None})})
    with pytest.raises(UsageError, match=r"input X has dynamic axes \[0\]; engine profile default gives no shape range"):
        engines.plan_engine(dynamic, "fp32", profile)
    (tmp_path / "named.yaml").write_text("shapes: {inputs: {X: {min: [1, 4, 5, 5], opt: [2, 4, 5, 5], max: [4, 4, 5, 5]}}}\n")
    assert engines.plan_engine(dynamic, "fp32", load_profile(str(tmp_path / "named.yaml"))).shapes == (
        ("X", (1, 4, 5, 5), (2, 4, 5, 5), (4, 4, 5, 5)),)
    assert engines.plan_engine(build_case(LAYER).model, "fp32", load_profile(str(tmp_path / "named.yaml"))).shapes == ()
    (tmp_path / "rank.yaml").write_text("shapes: {inputs: {X: {min: [1, 4], opt: [1, 4], max: [1, 4]}}}\n")
    with pytest.raises(UsageError, match="shapes.inputs.X has rank 2, the model's input has rank 4"):
        engines.plan_engine(dynamic, "fp32", load_profile(str(tmp_path / "rank.yaml")))


# --- the engine cache ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_cache_key_is_stable_and_changes_with_every_part():
    model = build_case(LAYER).model_bytes
    plan = engines.plan_engine(build_case(LAYER).model, "fp32", load_profile("h100"))
    build = plan.__dict__ | {}
    key = engine_key(model, build, HOST)
    assert key == engine_key(bytes(model), dict(reversed(list(build.items()))), HOST)  # order never matters
    # the same key from a fresh interpreter: nothing process-specific (hash seeds, ids) goes in
    script = ("import json, sys; from deploykit.backends.tensorrt.cache import BuildHost, engine_key; "
              "print(engine_key(bytes.fromhex(sys.argv[1]), json.loads(sys.argv[2]), BuildHost(*sys.argv[3:])))")
    fresh = subprocess.run([sys.executable, "-c", script, model.hex(), json.dumps(build), *HOST.__dict__.values()],
                           capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "7"})
    assert fresh.stdout.strip() == key
    other_model = build_case(LAYER.replace(bias=False)).model_bytes
    changed = {engine_key(other_model, build, HOST)}
    for field, value in [("precision", "tf32"), ("tf32", True), ("fp16", True), ("bf16", True), ("strongly_typed", True),
                         ("builder_optimization_level", 3), ("workspace_bytes", 1 << 30), ("profile", "a100"),
                         ("shapes", (("X", (1, 4, 5, 5), (2, 4, 5, 5), (4, 4, 5, 5)),))]:
        changed.add(engine_key(model, {**build, field: value}, HOST))
    for field, value in [("tensorrt", "10.14.0"), ("polygraphy", "0.53.7"), ("gpu", "NVIDIA H200"), ("compute_capability", "9.1")]:
        changed.add(engine_key(model, build, replace(HOST, **{field: value})))
    assert len(changed) == 14 and key not in changed


def test_profile_fields_that_do_not_change_the_engine_do_not_change_the_plan():
    case, h100 = build_case(LAYER), load_profile("h100")
    quiet = h100.model_copy(update={"description": "other", "cuda_graphs": False, "gpus": ("GH200",)})
    assert engines.plan_engine(case.model, "fp32", quiet) == engines.plan_engine(case.model, "fp32", h100)
    wider = h100.model_copy(update={"workspace": 16 << 30})
    assert engines.plan_engine(case.model, "fp32", wider) != engines.plan_engine(case.model, "fp32", h100)


def test_cache_stores_atomically_under_a_content_address(tmp_path):
    cache = EngineCache(tmp_path / "cache")
    key = engine_key(b"model", {"precision": "fp32"}, HOST)
    assert cache.load(key) is None
    path = cache.store(key, b"engine bytes", {"what": "a test"})
    assert path == tmp_path / "cache" / key[:2] / f"{key}.engine" and cache.load(key) == b"engine bytes"
    assert json.loads(path.with_suffix(".json").read_text()) == {"what": "a test"}
    assert sorted(p.name for p in path.parent.iterdir()) == [f"{key}.engine", f"{key}.json"]  # no partial file left
    cache.store(key, b"rebuilt", {})
    assert cache.load(key) == b"rebuilt"
    assert cache.timing_cache_path(HOST) == cache.timing_cache_path(replace(HOST)) != cache.timing_cache_path(replace(HOST, gpu="x"))
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert EngineCache(blocked).store(key, b"engine", {}) is None  # an unwritable cache costs a rebuild, not the run


def test_a_cached_engine_is_found_under_the_key_it_was_stored_with(tmp_path, driver, tensorrt_module):
    """Lookup and store agree on the key: a stored engine is returned without building (which,
    with the stand-in tensorrt here, would fail)."""
    polygraphy = pytest.importorskip("polygraphy")
    case = build_case(LAYER)
    plan = engines.plan_engine(case.model, "fp16", load_profile("h100"))
    host = BuildHost(HOST.tensorrt, polygraphy.__version__, HOST.gpu, HOST.compute_capability)
    assert engines.build_host() == host
    cache = EngineCache(tmp_path)
    cache.store(engine_key(case.model_bytes, plan.__dict__, host), b"serialized engine", {})
    loader = engines.CachedEngineBytes(case.model_bytes, plan, cache)
    assert loader() == b"serialized engine" and loader.hit is True
    assert loader.path == cache.engine_path(engine_key(case.model_bytes, plan.__dict__, host))


# --- Polygraphy: the loader objects deploykit composes --------------------------------------------------


def test_the_loaders_are_polygraphys_with_the_plan_in_them(capsys):
    trt = _polygraphy()
    case = build_case(LAYER, dynamic_batch=True)
    plan = engines.plan_engine(case.model, "tf32", load_profile("h100"))
    network = engines.network_loader(case.model_bytes, plan)
    assert isinstance(network, trt.NetworkFromOnnxBytes) and network.strongly_typed is False
    assert network._model_bytes == case.model_bytes
    config = engines.config_loader(plan, "/cache/timing.cache")
    assert isinstance(config, trt.PostprocessConfig) and config._func == engines.WorkspaceLimit(8 << 30)
    create = config._config
    assert isinstance(create, trt.CreateConfig)
    assert (create.tf32, create.fp16, create.bf16, create.builder_optimization_level) == (True, False, False, 5)
    assert create.timing_cache_path == "/cache/timing.cache"
    [profile] = create.profiles
    assert isinstance(profile, trt.Profile) and list(profile["X"]) == [(1, 4, 5, 5), (8, 4, 5, 5), (64, 4, 5, 5)]
    build = engines.build_loader(case.model_bytes, plan, "/cache/timing.cache")
    assert isinstance(build, trt.EngineBytesFromNetwork) and build.timing_cache_path == "/cache/timing.cache"
    assert isinstance(build._network, trt.NetworkFromOnnxBytes) and isinstance(build._config, trt.PostprocessConfig)
    loader = engines.engine_loader(case.model_bytes, plan, EngineCache(Path("/cache")))
    assert isinstance(loader, trt.EngineFromBytes) and isinstance(loader._serialized_engine, engines.CachedEngineBytes)
    assert loader._serialized_engine.plan == plan
    assert capsys.readouterr() == ("", "")  # Polygraphy's chatter ("TF32 is disabled ...") stays out of the output


def test_fp32_clears_tf32_and_a_default_workspace_needs_no_postprocessing(capsys):
    trt = _polygraphy()
    strongly_typed = engines.plan_engine(build_case(LAYER.replace(dtype="float16")).model, "fp32", load_profile("default"))
    config = engines.config_loader(strongly_typed)
    assert isinstance(config, trt.CreateConfig) and config.tf32 is False and config.profiles[0] == trt.Profile()
    assert engines.network_loader(b"onnx", strongly_typed).strongly_typed is True
    assert capsys.readouterr() == ("", "")  # CreateConfig(tf32=False) logs advice: not printed


def test_the_runner_reads_raw_outputs_in_the_models_type_and_refuses_mistyped_feeds():
    _polygraphy()
    from polygraphy.common import FormattedArray

    from deploykit.backends.base import TensorMeta
    from deploykit.backends.tensorrt.runner import _host_array

    y = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    raw = FormattedArray(np.frombuffer(y.tobytes(), np.uint8).copy(), shape=(2, 3))
    assert _host_array(raw, y.dtype).dtype == y.dtype and _host_array(raw, y.dtype).tobytes() == y.tobytes()
    with pytest.raises(RuntimeError, match=r"TensorRT returned 6 bytes for an output of shape \[2, 3\] \(12 expected\)"):
        _host_array(FormattedArray(np.zeros(6, np.uint8), shape=(2, 3)), y.dtype)
    runner = TensorRtRunner(lambda: None, {"Y": y.dtype}, cuda_graphs=False)
    runner._inputs = {"X": TensorMeta("X", "bfloat16", (2, 3))}
    fed = runner._device_feeds({"X": y})
    assert fed["X"].dtype == np.uint16 and fed["X"].tobytes() == y.tobytes()  # the bit pattern, not converted values
    with pytest.raises(TypeError, match="input X is bfloat16 in the engine, got float32"):
        runner._device_feeds({"X": y.astype(np.float32)})


def test_the_backend_loads_through_the_profile_in_its_build_config(monkeypatch):
    trt = _polygraphy()
    monkeypatch.delenv(PROFILE_ENVIRONMENT, raising=False)
    backend = registry.get("tensorrt")
    case = build_case(LAYER.replace(dtype="bfloat16", opset=22))
    runner = backend.load(case, BuildConfig("fp32", hints=(("profile", "h100"),)))
    assert isinstance(runner, TensorRtRunner) and runner._cuda_graphs is True
    assert isinstance(runner._load_engine, trt.EngineFromBytes)
    plan = runner._load_engine._serialized_engine.plan
    assert (plan.profile, plan.strongly_typed, plan.builder_optimization_level) == ("h100", True, 5)
    assert runner._outputs == {"Y": np.dtype("bfloat16")}
    monkeypatch.setenv(PROFILE_ENVIRONMENT, "t4")
    assert backend.load(build_case(LAYER), BuildConfig())._load_engine._serialized_engine.plan.profile == "t4"


def test_tensorrts_messages_become_the_refusal_and_nothing_is_printed(capsys):
    """Polygraphy's own parser check logs each TensorRT parser error, then raises a generic one."""
    _polygraphy()
    from polygraphy.backend.trt import util as trt_util
    from polygraphy.logger import G_LOGGER

    class Parser:  # what TensorRT's OnnxParser answers after refusing a node
        num_errors = 2

        def get_error(self, index):
            return ["In node 0 (ConvTranspose): UNSUPPORTED_NODE: Assertion failed: kernel weights",
                    "In node 0: unsupported padding"][index]

    severity = G_LOGGER.module_severity
    with pytest.raises(engines.EngineRefused) as refused:
        with engines.polygraphy_messages():
            trt_util.check_onnx_parser_errors(Parser(), False)
    assert str(refused.value) == ("In node 0 (ConvTranspose): UNSUPPORTED_NODE: Assertion failed: kernel weights; "
                                  "In node 0: unsupported padding; Could not parse ONNX correctly")
    assert capsys.readouterr() == ("", "")
    assert G_LOGGER.module_severity is severity and G_LOGGER.use_python_logging_system is False


def test_a_runtime_refusal_in_activate_is_rejected_with_its_message(driver, monkeypatch):
    """Through the one execution path: the runner's activate raises (here the engine loader cannot
    import TensorRT), and run_backend records `rejected` with that message, not a crash."""
    _polygraphy()
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    backend = registry.get("tensorrt")
    outcome = run_backend(backend, Availability(True, "10.13"), build_case(LAYER), BuildConfig())
    assert (outcome.status, outcome.reason, outcome.outputs) == ("rejected", "import of tensorrt halted; None in sys.modules", {})


def test_polygraphys_own_refusal_in_trtrunner_becomes_engine_refused(capsys):
    _polygraphy()
    from polygraphy.backend.trt import EngineFromBytes

    runner = TensorRtRunner(EngineFromBytes(b"not an engine"), {"Y": np.dtype("float32")}, cuda_graphs=False)
    with pytest.raises(engines.EngineRefused, match="Module: 'tensorrt' is required but could not be imported"):
        runner.activate()
    runner.deactivate()  # after a failed activate, as run_backend always does: no error, no warning
    assert capsys.readouterr() == ("", "")


# --- probe, registry, capabilities, accumulation -------------------------------------------------------


def test_probe_names_what_is_missing_and_how_to_install_it(monkeypatch, tensorrt_module, no_driver):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert TensorRtBackend().probe() == Availability(
        False, None, "needs the 'tensorrt' package (import of tensorrt halted; None in sys.modules); install it with: pip install 'deploykit[tensorrt]'")
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_module)
    monkeypatch.setitem(sys.modules, "polygraphy", None)
    status = TensorRtBackend().probe()
    assert status.version == HOST.tensorrt and status.reason.startswith("needs the 'polygraphy' package")
    assert status.reason.endswith("install it with: pip install 'deploykit[tensorrt]'")


def test_probe_needs_a_new_enough_polygraphy_and_a_gpu(monkeypatch, tensorrt_module, no_driver):
    polygraphy = pytest.importorskip("polygraphy")
    status = TensorRtBackend().probe()
    assert status == Availability(False, HOST.tensorrt, f"TensorRT {HOST.tensorrt} is installed but no NVIDIA GPU is visible: "
                                  f"no NVIDIA driver ({cuda_driver.DRIVER_LIBRARY} cannot be loaded)")
    monkeypatch.setattr(polygraphy, "__version__", "0.49.9")
    assert "polygraphy 0.49.9 is older than 0.49.18" in TensorRtBackend().probe().reason


def test_probe_with_tensorrt_polygraphy_and_a_gpu_is_available(tensorrt_module, driver):
    pytest.importorskip("polygraphy")
    assert TensorRtBackend().probe() == Availability(True, HOST.tensorrt, "")


def test_the_cuda_driver_answers_name_and_compute_capability(driver, monkeypatch):
    assert cuda_driver.visible_device() == cuda_driver.CudaDevice("NVIDIA H100 80GB HBM3", "9.0")
    cuda_driver.visible_device.cache_clear()
    monkeypatch.setenv("FAKE_CUDA_COUNT", "0")
    assert cuda_driver.missing_reason() == "the NVIDIA driver sees no CUDA device"
    monkeypatch.setenv("FAKE_CUDA_INIT", "100")
    assert cuda_driver.missing_reason() == "cuInit failed: CUDA_ERROR_NO_DEVICE"
    monkeypatch.setenv("FAKE_CUDA_INIT", "999")
    assert cuda_driver.missing_reason() == "cuInit failed: CUDA driver error 999"


def test_registry_and_capabilities(driver):
    assert "tensorrt" in registry.names() and "tensorrt" in registry.deployment_targets()
    backend = registry.get("tensorrt")
    caps = backend.capabilities
    assert (caps.device, caps.loads_onnx, caps.reference) == ("cuda", True, False)
    assert caps.dtypes == ("float32", "float16", "bfloat16") and caps.precisions == ("fp32", "tf32", "fp16", "bf16")
    assert backend.unsupported_reason(build_case(LAYER.replace(dtype="float64")), BuildConfig()) == "tensorrt has no float64 ConvTranspose kernel"
    assert backend.unsupported_reason(build_case(LAYER), BuildConfig()) is None
    assert backend.unsupported_reason(build_case(LAYER), BuildConfig(hints=(("profile", "a100"),))) == \
        "engine profile a100 is for A100 GPUs, this GPU is NVIDIA H100 80GB HBM3"
    assert backend.unsupported_reason(build_case(LAYER), BuildConfig("bf16", hints=(("profile", "t4"),))).startswith(
        "engine profile t4 has no bf16 build precision")


@pytest.mark.slow
def test_backends_command_lists_tensorrt_with_its_reason():
    proc = deploykit("backends")
    assert proc.returncode == 0, proc.stderr
    device, available, version, reason = backend_rows(proc.stdout)["tensorrt"]
    assert (device, available) == ("cuda", "no")
    if importlib_missing("tensorrt"):
        assert version == "-" and reason.startswith("needs the 'tensorrt' package")
        assert "'deploykit[tensorrt]'" in proc.stdout  # printed as text, not eaten as rich markup


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def test_accumulation_declarations():
    backend = TensorRtBackend()
    assert backend.accumulation("float32", BuildConfig("fp32")) == (OneSum("float32"),)
    assert backend.accumulation("float32", BuildConfig("tf32")) == (OneSum("float32", operands="tfloat32"),)
    assert backend.accumulation("float32", BuildConfig("fp16")) == (OneSum("float32", operands="float16", result="float16"), OneSum("float32"))
    assert backend.accumulation("float32", BuildConfig("bf16")) == (OneSum("float32", operands="bfloat16", result="bfloat16"), OneSum("float32"))
    for dtype in ("float16", "bfloat16"):
        assert backend.accumulation(dtype, BuildConfig()) == (OneSum("float32"), OneSum(dtype))


def _tf32(array: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32's 10-bit mantissa (nearest, ties to even), as tensor cores read it."""
    bits = np.ascontiguousarray(array, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0xFFF) + ((bits >> 13) & 1)) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


@pytest.mark.parametrize("dtype, precision, emulate", [
    ("float32", "tf32", lambda spec, x, w, b: emulation.one_float32_sum(spec, _tf32(x), _tf32(w), None if b is None else _tf32(b))),
    ("float32", "fp16", emulation.lowered(emulation.one_float32_sum, np.float16)),
    ("float16", "fp32", emulation.tap_sums),
], ids=["tf32", "fp16-on-float32", "float16-summed-in-float16"])
def test_each_declared_model_admits_what_it_declares_and_fp32_alone_would_not(dtype, precision, emulate):
    """What a TensorRT build at `precision` may do (emulated bit for bit) passes under the declared
    models, and is `drift` under plain float32: the declaration is needed, not decoration."""
    spec = ConvTransposeSpec((1, 32, 6, 6), 8, (4, 4), strides=1, pads=0, dtype=dtype)
    case = build_case(spec)
    output = emulate(spec, case.x, case.w, case.b)
    exact = ExactAnswer(spec, case.x, case.w, case.b)
    declared = judge_output(spec, output, exact, TensorRtBackend().accumulation(dtype, BuildConfig(precision)))
    plain = judge_output(spec, output, exact, (OneSum("float32"),))
    assert declared.verdict == "pass", declared.reason
    assert plain.verdict == "drift", plain.reason


# --- export --engine -------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_engine_refuses_in_one_line_before_any_work(tmp_path):
    onnx_path = tmp_path / "m.onnx"
    common = ("export", "dcgan", "-o", str(onnx_path), "--engine", str(tmp_path / "m.engine"))
    if importlib_missing("tensorrt"):
        assert_usage_error(deploykit(*common), "--engine: cannot build a TensorRT engine here: needs the 'tensorrt' package",
                           "pip install 'deploykit[tensorrt]'")
    assert_usage_error(deploykit(*common, "--engine-profile", "h200"), "unknown engine profile 'h200'; known: a100, default, h100, t4")
    assert_usage_error(deploykit(*common, "--engine-profile", "t4", "--engine-precision", "tf32"),
                       "--engine-precision tf32: engine profile t4 has no tf32 build precision (it offers fp32, fp16)")
    assert_usage_error(deploykit(*common, "--dtype", "float16", "--engine-precision", "bf16"),
                       "a float16 model is built strongly typed and computes in float16; bf16 does not apply")
    (tmp_path / "bad.yaml").write_text("workspace: -1\n")
    assert_usage_error(deploykit(*common, "--engine-profile", str(tmp_path / "bad.yaml")), "workspace: must be above 0, got -1")
    assert not onnx_path.exists() and not (tmp_path / "m.engine").exists()


# --- ci/gpu-check.sh -----------------------------------------------------------------------------------


def _gpu_check(out: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(GPU_CHECK), str(out)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHON": sys.executable, **env})


@pytest.mark.slow
def test_gpu_check_without_a_gpu_says_so_and_passes(tmp_path):
    proc = _gpu_check(tmp_path / "out", NVIDIA_SMI=str(tmp_path / "no-nvidia-smi"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "GPU missing:" in summary and "skipped: the GPU tests, the smoke matrix on torch-cuda,ort-cuda,tensorrt" in summary
    assert "the GPU fidelity benchmark" in summary
    assert summary.rstrip().endswith("gpu-check: exit 0") and summary == proc.stdout
    assert subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True).returncode == 2


@pytest.fixture
def fake_nvidia_smi(tmp_path) -> Path:
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    script.chmod(0o755)
    return script


@pytest.mark.slow
def test_gpu_check_runs_every_step_on_the_backends_it_finds(tmp_path, fake_nvidia_smi):
    """With a GPU reported and ort-cpu standing in for a GPU backend, every step runs from the tree
    and writes its results; an unavailable backend is skipped with its reason."""
    out = tmp_path / "out"
    proc = _gpu_check(out, NVIDIA_SMI=str(fake_nvidia_smi), GPU_CHECK_BACKENDS="ort-cpu,tensorrt",
                      GPU_CHECK_TIMING="--warmup-ms 1 --duration 0.005 --iterations 2")
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, summary
    if importlib_missing("tensorrt"):
        assert "skipped backend tensorrt: needs the 'tensorrt' package" in summary
    assert "GPU tests (tests/backends/test_gpu.py, tests/backends/test_tensorrt.py -m gpu): exit 0" in summary
    assert "smoke matrix on ort-cpu, fp32 and tf32, with latency: exit 0" in summary
    results = json.loads((out / "smoke.json").read_text())["results"]
    assert {(r["backend"], r["precision"]) for r in results} == {("ort-cpu", "fp32"), ("ort-cpu", "tf32")}
    assert any(r["latency_median_ms"] for r in results) and (out / "results.db").is_file() and (out / "smoke.md").is_file()
    for precision in ("fp32", "tf32"):
        assert f"profile decoder-256-128-32x32-k4s2p1 at {precision}: exit 0" in summary
        assert json.loads((out / f"profile-{precision}.json").read_text())
        # the CUDA-graph profile runs too; ort-cpu has no graphs, so its row says so and is no failure
        assert f"profile decoder-256-128-32x32-k4s2p1 at {precision} with --cuda-graph: exit 0" in summary
        graph = json.loads((out / f"profile-{precision}-cuda-graph.json").read_text())
        assert graph["timing"]["cuda_graph"] is True
        assert [(r["backend"], r["status"], r["timing_mode"]) for r in graph["results"]] == [("ort-cpu", "unsupported", "cuda-graph")]
    assert "GPU fidelity benchmark (benchmarks/bench_gpu_fidelity.py): exit 0 (gpu-fidelity.jsonl)" in summary
    if cuda_driver.missing_reason():  # the stand-in nvidia-smi aside, this machine has no GPU: the benchmark says so
        assert "  no GPU: " in summary and (out / "gpu-fidelity.jsonl").read_text().startswith("no GPU: ")
    assert "gpu-check: exit 0" in summary


@pytest.mark.slow
def test_gpu_check_fails_when_a_gpu_has_no_backend(tmp_path, fake_nvidia_smi):
    proc = _gpu_check(tmp_path / "out", NVIDIA_SMI=str(fake_nvidia_smi), GPU_CHECK_BACKENDS="tensorrt")
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert proc.returncode == 1, summary
    assert "no GPU backend is available although a GPU is present" in summary and not (tmp_path / "out" / "results.db").exists()


# --- on a machine with TensorRT and a GPU ---------------------------------------------------------------


def _available_tensorrt():
    status = registry.get("tensorrt").probe()
    if not status.available:
        pytest.skip(f"tensorrt unavailable here: {status.reason}")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
def test_tensorrt_smoke_matrix(precision, tmp_path, monkeypatch):
    _available_tensorrt()
    monkeypatch.setenv("DEPLOYKIT_ENGINE_CACHE", str(tmp_path))
    from deploykit.conformance.matrix import load

    executor = Executor(latency={"warmup_ms": 10, "iterations": 5, "duration_s": 0.02, "include_transfers": False})
    failures = []
    for spec in load("smoke").specs:
        result = executor.run(spec, "tensorrt", precision=precision)
        if result.verdict not in ("pass", "unsupported") and not result.known_divergence:
            failures.append(f"{spec.label}: {result.verdict}: {result.reason}")
    assert not failures, failures


@pytest.mark.gpu
def test_tensorrt_engine_cache_hit_and_export_engine(tmp_path):
    _available_tensorrt()
    case, profile = build_case(LAYER), load_profile("default")
    cache = EngineCache(tmp_path / "cache")
    first = engines.export_engine(case.model_bytes, tmp_path / "a.engine", "fp32", profile, cache)
    second = engines.export_engine(case.model_bytes, tmp_path / "b.engine", "fp32", profile, cache)
    assert (first.hit, second.hit) == (False, True)
    assert (tmp_path / "a.engine").read_bytes() == (tmp_path / "b.engine").read_bytes()
