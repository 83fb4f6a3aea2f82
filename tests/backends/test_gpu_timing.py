"""GPU timing after trtexec (host latency and GPU compute time), CUDA-graph replay and ORT's timed
call, tested with stand-ins for torch's CUDA and onnxruntime (tests/gpu_fakes.py): none of this
needs a GPU.  What only a GPU can show (the figures themselves) is benchmarks/bench_gpu_fidelity.py's."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys

import gpu_fakes
import numpy as np
import pytest
from helpers import ROOT, TESTS, assert_usage_error, deploykit
from rich.console import Console

from deploykit.backends import gpu_timing, torch_backend
from deploykit.backends import ort as ort_backend
from deploykit.backends.base import BuildConfig
from deploykit.backends.gpu_timing import NO_EVENTS, HostOnly, Sample
from deploykit.backends.ort import GRAPH_CAPTURE_RUNS, OrtRunner
from deploykit.backends.tensorrt import cuda_driver
from deploykit.backends.tensorrt import runner as trt_backend
from deploykit.backends.timing import TimingOptions, measure, summarise
from deploykit.onnxio.write import build_case
from deploykit.op.spec import ConvTransposeSpec
from deploykit.results.store import SCHEMA_VERSION, Store

SMALL = ConvTransposeSpec((1, 4, 4, 4), 2, (2, 2), strides=2)
FAST = TimingOptions(warmup_ms=0, iterations=5, duration_s=0)
FEEDS = {"X": np.ones((1, 4, 4, 4), np.float32)}
CALL = ("run_with_iobinding", {"gpu_graph_id": "0"})


@pytest.fixture
def fake_ort(monkeypatch):
    """onnxruntime replaced by the stand-in (lazy_import finds it in sys.modules), and no torch."""
    monkeypatch.setitem(sys.modules, "onnxruntime", gpu_fakes.fake_onnxruntime())
    monkeypatch.setattr(ort_backend, "torch_cuda", lambda: None)
    return gpu_fakes.FakeLoader([])


@pytest.fixture
def fake_torch(monkeypatch):
    torch = gpu_fakes.FakeTorch()
    monkeypatch.setattr(gpu_timing, "torch_cuda", lambda: torch)
    return torch


@pytest.fixture
def gpu_backends(monkeypatch):
    """`fake-gpu` (both figures, CUDA graphs) and `fake-gpu-host` (host latency only, no graphs)."""
    monkeypatch.setenv("DEPLOYKIT_BACKENDS", "fake-gpu=gpu_fakes:FakeGpuBackend,fake-gpu-host=gpu_fakes:HostOnlyGpuBackend")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))


def _ort_runner(loader, device: str) -> OrtRunner:
    runner = OrtRunner(loader, device)
    runner.activate()
    return runner


def _per_call(log: list, sample, calls: int = 4) -> list:
    """What `calls` samples did, after the setup before them."""
    log.clear()
    for _ in range(calls):
        sample()
    return list(log)


# --- the timing engine: two figures ----------------------------------------------------------------------


def test_samples_with_gpu_figures_give_two_sets_of_statistics():
    samples = [Sample(host_ms=1.0 + i / 100, gpu_ms=0.5 + i / 1000) for i in range(20)]
    stats = summarise(samples, warmup_runs=3, min_samples=10)
    assert stats.median_ms == pytest.approx(1.095) and stats.gpu.median_ms == pytest.approx(0.5095)
    assert stats.gpu.samples == stats.samples == 20 and stats.gpu_note is None
    assert stats.compute_gflops(10**9) == pytest.approx(1 / 0.5095 * 1e3)  # the work's rate: GPU time
    assert stats.throughput_per_s() == pytest.approx(1e3 / 1.095)  # what a caller gets: host latency
    assert set(stats.gpu.figures()) == {"min_ms", "median_ms", "mean_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms",
                                        "std_ms", "cv", "samples"}
    noisy = summarise([Sample(1.0, g) for g in (0.5, 0.9) * 10], 0, 10)
    assert any(w.startswith("GPU compute: noisy") for w in noisy.warnings)


def test_host_only_samples_keep_one_figure_and_say_why():
    stats = measure(HostOnly(lambda: None, "host latency only: because"), FAST)
    assert stats.gpu is None and stats.gpu_note == "host latency only: because" and stats.samples >= 5
    plain = measure(lambda: 2.0, FAST)  # CPU backends: a float per sample, as before
    assert plain.median_ms == 2.0 and plain.gpu is None and plain.gpu_note is None


def test_cuda_graph_is_stored_only_when_on():
    assert "cuda_graph" not in TimingOptions().as_dict() and TimingOptions().mode == "plain"
    graph = TimingOptions(cuda_graph=True)
    assert graph.as_dict()["cuda_graph"] is True and graph.mode == "cuda-graph"
    assert TimingOptions(**graph.as_dict()) == graph and TimingOptions(**TimingOptions().as_dict()) == TimingOptions()


# --- ORT: one run_with_iobinding per call, nothing more -------------------------------------------------


def test_ort_cpu_call_is_one_run_with_run_options_whose_lookup_never_raises(fake_ort):
    """onnxruntime 1.31 reads `gpu_graph_id` from the RunOptions of every run_with_iobinding and
    raises inside when it is unset (tens of microseconds per call): deploykit sets it."""
    sample = _ort_runner(fake_ort, "cpu").iteration(FEEDS)
    assert _per_call(fake_ort.log, sample) == [CALL] * 4


def test_ort_cuda_without_torch_is_one_run_and_no_extra_synchronise(fake_ort):
    """The run synchronises ORT's stream itself; a synchronize_outputs() (a device-wide sync) per
    call was the other per-call extra."""
    runner = _ort_runner(fake_ort, "cuda")
    sample = runner.iteration(FEEDS)
    assert sample.gpu_note == NO_EVENTS and len(fake_ort.sessions) == 1  # the verdict's session, host latency only
    assert _per_call(fake_ort.log, sample) == [CALL] * 4
    assert sample().gpu_ms is None


def test_ort_cuda_with_events_times_on_its_own_stream_without_a_synchronising_run(fake_ort, fake_torch, monkeypatch):
    monkeypatch.setattr(ort_backend, "torch_cuda", lambda: fake_torch)
    loader = gpu_fakes.FakeLoader(fake_torch.log)  # one log for ORT's and torch's calls, in order
    runner = _ort_runner(loader, "cuda")
    sample = runner.iteration(FEEDS)
    timing_session = loader.sessions[-1]
    assert timing_session.provider_options == {"use_tf32": "0", "user_compute_stream": "100"}
    calls = _per_call(loader.log, sample, 1)
    start, end = calls[0][1], calls[2][1]
    no_sync = {"gpu_graph_id": "0", "disable_synchronize_execution_providers": "1"}
    assert calls == [("record", start, 100), ("run_with_iobinding", no_sync), ("record", end, 100), ("event.synchronize", end)]
    result = sample()
    assert result.gpu_ms == gpu_fakes.EVENT_MS and result.host_ms > 0
    runner.deactivate()
    assert runner._stream is None and runner._timing_sessions == []


def test_ort_cuda_graph_captures_before_timing_and_replays_one_run_per_call(fake_ort, fake_torch, monkeypatch):
    monkeypatch.setattr(ort_backend, "torch_cuda", lambda: fake_torch)
    runner = _ort_runner(fake_ort, "cuda")
    fake_ort.log.clear()
    sample = runner.iteration(FEEDS, cuda_graph=True)
    assert fake_ort.sessions[-1].provider_options == {"use_tf32": "0", "enable_cuda_graph": "1"}
    setup_runs = [entry for entry in fake_ort.log if entry[0] == "run_with_iobinding"]
    assert len(setup_runs) == 2 + GRAPH_CAPTURE_RUNS  # allocate, reuse, then the runs ORT captures on
    assert "synchronises inside the call" in sample.gpu_note
    assert _per_call(fake_ort.log, sample) == [CALL] * 4


def test_ort_output_that_cannot_be_reused_is_rebound_per_call_but_refused_for_a_graph(fake_ort):
    loader = gpu_fakes.FakeLoader([], reuse_outputs=False)
    sample = _ort_runner(loader, "cpu").iteration(FEEDS)
    assert _per_call(loader.log, sample, 1) == [("clear_binding_outputs",), ("bind_output", "Y", "cpu"), CALL]
    with pytest.raises(RuntimeError, match="CUDA-graph replay needs fixed output buffers"):
        _ort_runner(loader, "cuda").iteration(FEEDS, cuda_graph=True)


# --- CUDA events and graphs through torch ---------------------------------------------------------------


def test_event_timed_brackets_the_call_on_the_stream_and_synchronises_on_the_end_event(fake_torch):
    sample = gpu_timing.event_timed(lambda: fake_torch.log.append(("work",)))
    calls = _per_call(fake_torch.log, sample, 1)
    start, end = calls[0][1], calls[2][1]
    assert calls == [("record", start, 1), ("work",), ("record", end, 1), ("event.synchronize", end)]
    on_stream = gpu_timing.event_timed(lambda: fake_torch.log.append(("work",)), gpu_fakes.FakeStream(fake_torch.log, 7),
                                       enter_stream=True)
    assert [c[0] for c in _per_call(fake_torch.log, on_stream, 1)] == ["record", "enter stream", "work", "exit stream", "record",
                                                                        "event.synchronize"]


def test_capture_graph_warms_up_on_the_side_stream_then_captures_once(fake_torch):
    replay = gpu_timing.capture_graph(lambda: fake_torch.log.append(("work", fake_torch.cuda.current_stream().cuda_stream)),
                                      warmups=2)
    kinds = [entry[0] for entry in fake_torch.log]
    assert kinds == ["wait_stream", "enter stream", "work", "work", "exit stream", "wait_stream", "enter capture", "work",
                     "exit capture", "wait_stream"]
    assert fake_torch.log[2] == ("work", 100) and fake_torch.log[7] == ("work", 100)  # on the side stream, not the current one
    fake_torch.log.clear()
    replay()
    assert fake_torch.log == [("replay",)]


def test_no_torch_cuda_is_a_one_line_timing_problem(monkeypatch):
    monkeypatch.setattr(gpu_timing, "torch_cuda", lambda: None)
    with pytest.raises(RuntimeError, match="^CUDA-graph replay needs torch with CUDA$"):
        gpu_timing.capture_graph(lambda: None)


def test_torch_cuda_samples_events_or_replays_a_graph_of_the_layer(monkeypatch):
    torch = pytest.importorskip("torch")
    seen = {}
    monkeypatch.setattr(torch_backend, "from_numpy", lambda array, device: torch.from_numpy(np.ascontiguousarray(array)))
    monkeypatch.setattr(torch_backend, "event_timed", lambda run: seen.setdefault("timed", run))
    monkeypatch.setattr(torch_backend, "capture_graph",
                        lambda run, warmups: seen.update(captured=run(), warmups=warmups) or "replay")
    case = build_case(SMALL)
    runner = torch_backend.TorchRunner(case, "cuda", BuildConfig())
    runner.activate()
    assert runner.iteration(case.feeds, cuda_graph=True) == "replay" and seen["warmups"] == 3
    assert tuple(seen["captured"].shape) == SMALL.output_full_shape  # the capture ran the layer itself
    seen.clear()
    runner.iteration(case.feeds)
    assert seen["timed"]() is None  # plain: events around one call (enqueue only; the event waits)


def test_tensorrt_samples_have_both_figures_on_its_stream_or_say_why_not(monkeypatch, fake_torch):
    stream = gpu_fakes.FakeStream(fake_torch.log, 7)
    stream.ptr = 7
    launches = []
    runner = trt_backend.TensorRtRunner(lambda: None, {}, cuda_graphs=False)
    runner._runner = type("Runner", (), {"stream": stream, "context": type("Context", (), {
        "execute_async_v3": staticmethod(lambda pointer: launches.append(pointer) or True)})()})()
    monkeypatch.setattr(runner, "infer", lambda feeds: {})
    monkeypatch.setattr(trt_backend, "torch_cuda", lambda: fake_torch)
    result = runner.iteration({})()
    assert result.gpu_ms == gpu_fakes.EVENT_MS and launches == [7]
    assert [e[2] for e in fake_torch.log if e[0] == "record"] == [7, 7]  # both events on TensorRT's stream
    monkeypatch.setattr(trt_backend, "torch_cuda", lambda: None)
    host_only = runner.iteration({})
    assert host_only.gpu_note == NO_EVENTS and host_only().gpu_ms is None and ("stream.synchronize", 7) in fake_torch.log


# --- profile and conformance: both figures flow to rows, tables, JSON and the database ---------------------


def test_profile_rows_and_table_carry_both_figures(gpu_backends):
    from deploykit.profile import profile, targets_for_spec
    from deploykit.report import profile_table

    rows = profile(targets_for_spec(SMALL, None), ["fake-gpu", "fake-gpu-host", "reference"], FAST)
    gpu, host_only, cpu = rows
    assert (gpu.median_ms, gpu.gpu_compute["median_ms"], gpu.timing_mode) == (0.12, 0.08, "plain")
    assert gpu.gflops == pytest.approx(SMALL.flops / 0.08e6) and gpu.throughput_per_s == pytest.approx(1e3 / 0.12)
    assert host_only.gpu_compute is None and host_only.gpu_compute_note.startswith("host latency only")
    assert cpu.gpu_compute is None and cpu.gpu_compute_note is None
    console = Console(width=250, file=io.StringIO())
    profile_table(rows, console, "small")
    text = console.file.getvalue()
    assert "host median ms" in text and "GPU median ms" in text and "0.08" in text
    assert "fake-gpu-host (batch 1): host latency only: no CUDA events in this test" in text


@pytest.mark.slow
def test_profile_cuda_graph_json_and_unsupported_rows(gpu_backends, tmp_path):
    out = tmp_path / "p.json"
    proc = deploykit("profile", "--matrix", "smoke", "--config", "2d-dcgan-k4s2p1",
                     "--backends", "fake-gpu,fake-gpu-host,ort-cpu", "--cuda-graph", "--warmup-ms", "0", "--duration", "0",
                     "--iterations", "3", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Latency (CUDA-graph replay)" in proc.stdout
    report = json.loads(out.read_text())
    assert report["timing"]["cuda_graph"] is True
    rows = {r["backend"]: r for r in report["results"]}
    assert rows["fake-gpu"]["median_ms"] == 0.07 and rows["fake-gpu"]["gpu_compute"]["median_ms"] == 0.05
    assert {r["timing_mode"] for r in rows.values()} == {"cuda-graph"}
    for name, where in (("fake-gpu-host", "has no CUDA-graph replay"), ("ort-cpu", "runs on the CPU")):
        assert rows[name]["status"] == "unsupported" and f"{name} {where}: --cuda-graph applies to" in rows[name]["reason"]
        assert "fake-gpu," in rows[name]["reason"] or rows[name]["reason"].endswith("fake-gpu")


@pytest.mark.slow
def test_conformance_stores_both_figures_and_reports_them(gpu_backends, tmp_path):
    db, out = tmp_path / "r.db", tmp_path / "r.json"
    proc = deploykit("conformance", "run", "--backends", "fake-gpu,ort-cpu", "--latency", "--cuda-graph", "--db", str(db),
                     "--json", str(out), "--warmup-ms", "0", "--duration", "0", "--iterations", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [r for r in json.loads(out.read_text())["results"] if r["verdict"] == "pass" and r["expect"] == "accept"]
    gpu = [r for r in records if r["backend"] == "fake-gpu"]
    figures = {(r["latency_median_ms"], r["latency_gpu_median_ms"], r["latency_gpu_p99_ms"]) for r in gpu}
    assert gpu and figures == {(0.07, 0.05, 0.05)}
    cpu = [r for r in records if r["backend"] == "ort-cpu"]
    assert cpu and all(r["latency_median_ms"] is None for r in cpu)
    assert all("latency not measured: ort-cpu runs on the CPU" in r["reason"] for r in cpu)
    stored = Store(db, create=False).results(1)
    timed = [r for r in stored if r.backend == "fake-gpu" and r.verdict == "pass" and r.expect == "accept"]
    assert {r.latency_gpu_median_ms for r in timed} == {0.05}
    parameters = json.loads(sqlite3.connect(db).execute("SELECT parameters FROM runs").fetchone()[0])
    assert parameters["latency"]["cuda_graph"] is True


@pytest.mark.slow
@pytest.mark.parametrize("args, needle", [
    (["profile", "--matrix", "smoke", "--config", "2d-dcgan-k4s2p1", "--cuda-graph", "--include-transfers"],
     "--cuda-graph replays device work only; it cannot time host<->device copies (drop --include-transfers)"),
    (["conformance", "run", "--latency", "--cuda-graph", "--include-transfers"], "--cuda-graph replays device work only"),
    (["conformance", "run", "--cuda-graph"], "--cuda-graph is a timing mode: give it with --latency"),
])
def test_cuda_graph_usage_errors_are_one_line(args, needle, tmp_path):
    assert_usage_error(deploykit(*args, "--db", str(tmp_path / "r.db")) if args[0] == "conformance" else deploykit(*args), needle)
    assert not (tmp_path / "r.db").exists()


def test_a_schema_4_database_gains_the_gpu_columns(tmp_path):
    path = tmp_path / "old.db"
    Store(path).close()
    with sqlite3.connect(path) as connection:
        for column in ("latency_gpu_median_ms", "latency_gpu_p99_ms"):
            connection.execute(f"ALTER TABLE results DROP COLUMN {column}")
        connection.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
    read_only = Store(path, create=False)
    assert "latency_gpu_median_ms" not in read_only._result_columns  # reports read old layouts as they are
    read_only.close()
    Store(path).close()
    with sqlite3.connect(path) as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(results)")}
        version = connection.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert {"latency_gpu_median_ms", "latency_gpu_p99_ms"} <= columns and version == str(SCHEMA_VERSION) == "5"


def test_the_gpu_fidelity_benchmark_says_no_gpu_and_passes_here():
    reason = cuda_driver.missing_reason()
    if reason is None:
        pytest.skip("a CUDA device is visible: the benchmark times it instead (ci/gpu-check.sh runs it)")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu_fidelity.py")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"no GPU: {reason}; nothing timed\n"
