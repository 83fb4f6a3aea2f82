"""Stand-ins for the GPU parts of timing, so that GPU timing is tested where there is no GPU.

- `FakeTorch`: torch's CUDA events, streams and graphs, recording every call in order in a log.
- `fake_onnxruntime`: onnxruntime's RunOptions and OrtValue, and a session loader whose sessions
  and IO bindings record every call.  Its `run_with_iobinding` reads `gpu_graph_id` from the run
  options it is given, as onnxruntime 1.31's Python wrapper does, and logs when that lookup raises.
- `FakeGpuBackend`: the reference backend dressed as a CUDA backend whose samples carry both
  figures (registered by name for end-to-end tests of `profile` and `conformance run`).
"""

from __future__ import annotations

from types import SimpleNamespace

from deploykit.backends.base import Availability, Capabilities
from deploykit.backends.gpu_timing import HostOnly, Sample
from deploykit.backends.reference import ReferenceBackend

#: what FakeGpuBackend's samples say, plain and when replaying a CUDA graph
PLAIN = Sample(host_ms=0.12, gpu_ms=0.08)
GRAPH = Sample(host_ms=0.07, gpu_ms=0.05)
EVENT_MS = 0.05


class FakeStream:
    def __init__(self, log: list, pointer: int) -> None:
        self.log = log
        self.cuda_stream = pointer

    def wait_stream(self, other) -> None:
        self.log.append(("wait_stream", self.cuda_stream, other.cuda_stream))

    def synchronize(self) -> None:
        self.log.append(("stream.synchronize", self.cuda_stream))


class FakeEvent:
    count = 0

    def __init__(self, log: list, enable_timing: bool = False) -> None:
        FakeEvent.count += 1
        self.log, self.id = log, FakeEvent.count

    def record(self, stream=None) -> None:
        self.log.append(("record", self.id, None if stream is None else stream.cuda_stream))

    def synchronize(self) -> None:
        self.log.append(("event.synchronize", self.id))

    def elapsed_time(self, end) -> float:
        return EVENT_MS


class FakeGraph:
    def __init__(self, log: list) -> None:
        self.log = log

    def replay(self) -> None:
        self.log.append(("replay",))


class FakeTorch:
    """torch.cuda as GPU timing uses it; the current stream is pointer 1, new streams 100, 101, ..."""

    def __init__(self) -> None:
        self.log: list = []
        self._current = FakeStream(self.log, 1)
        self._streams = 100
        log = self.log
        torch = self

        class _Context:
            def __init__(self, kind: str, stream) -> None:
                self.kind, self.stream = kind, stream

            def __enter__(self):
                log.append((f"enter {self.kind}", self.stream.cuda_stream))
                self.previous, torch._current = torch._current, self.stream

            def __exit__(self, *exc) -> None:
                torch._current = self.previous
                log.append((f"exit {self.kind}", self.stream.cuda_stream))

        self.cuda = SimpleNamespace(
            is_available=lambda: True,
            Event=lambda enable_timing=False: FakeEvent(log, enable_timing),
            Stream=self._new_stream,
            ExternalStream=lambda pointer: FakeStream(log, pointer),
            current_stream=lambda: torch._current,
            stream=lambda stream: _Context("stream", stream),
            CUDAGraph=lambda: FakeGraph(log),
            graph=lambda graph, stream=None: _Context("capture", stream or torch._current),
        )

    def _new_stream(self) -> FakeStream:
        self._streams += 1
        return FakeStream(self.log, self._streams - 1)


class FakeRunOptions:
    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        self.log_severity_level = 0

    def add_run_config_entry(self, key: str, value: str) -> None:
        self.entries[key] = value

    def get_run_config_entry(self, key: str) -> str:
        if key not in self.entries:
            raise RuntimeError(f"RunOptions does not have configuration with key: {key}")
        return self.entries[key]


class FakeBinding:
    def __init__(self, log: list, reuse_outputs: bool = True) -> None:
        self.log, self.reuse_outputs = log, reuse_outputs

    def bind_ortvalue_input(self, name, value) -> None:
        self.log.append(("bind_ortvalue_input", name, value))

    def bind_output(self, name, device) -> None:
        self.log.append(("bind_output", name, device))

    def bind_ortvalue_output(self, name, value) -> None:
        if not self.reuse_outputs:
            raise RuntimeError("Shape mismatch attempting to re-use buffer")
        self.log.append(("bind_ortvalue_output", name, value))

    def get_outputs(self) -> list:
        return ["Y on the device"]

    def synchronize_outputs(self) -> None:
        self.log.append(("synchronize_outputs",))

    def clear_binding_outputs(self) -> None:
        self.log.append(("clear_binding_outputs",))


class FakeSession:
    def __init__(self, provider_options: dict, log: list, reuse_outputs: bool) -> None:
        self.provider_options, self.log, self.reuse_outputs = provider_options, log, reuse_outputs

    def io_binding(self) -> FakeBinding:
        return FakeBinding(self.log, self.reuse_outputs)

    def get_outputs(self) -> list:
        return [SimpleNamespace(name="Y")]

    def run(self, names, feeds, run_options=None) -> list:
        self.log.append(("run", None))
        return [feeds["X"]]

    def run_with_iobinding(self, binding, run_options=None) -> None:
        if run_options is not None:  # onnxruntime 1.31: _graph_annotation_id(run_options)
            try:
                run_options.get_run_config_entry("gpu_graph_id")
            except RuntimeError:
                self.log.append(("gpu_graph_id lookup raised",))
        self.log.append(("run_with_iobinding", None if run_options is None else dict(run_options.entries)))


class FakeLoader:
    """SessionFromOnnx's interface: call it for a session; `with_provider_options` for another loader."""

    def __init__(self, log: list, provider_options: dict | None = None, reuse_outputs: bool = True) -> None:
        self.log, self.provider_options, self.reuse_outputs = log, dict(provider_options or {"use_tf32": "0"}), reuse_outputs
        self.sessions: list[FakeSession] = []

    def __call__(self) -> FakeSession:
        session = FakeSession(self.provider_options, self.log, self.reuse_outputs)
        self.sessions.append(session)
        return session

    def with_provider_options(self, extra: dict) -> "FakeLoader":
        other = FakeLoader(self.log, {**self.provider_options, **extra}, self.reuse_outputs)
        other.sessions = self.sessions  # one list: every session either loader made
        return other


def fake_onnxruntime() -> SimpleNamespace:
    return SimpleNamespace(RunOptions=FakeRunOptions,
                           OrtValue=SimpleNamespace(ortvalue_from_numpy=lambda value, device, index: f"X on {device}"))


class FakeGpuRunner:
    """The reference's runner whose timing samples carry both figures (GRAPH when replaying a graph)."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def activate(self) -> None:
        self._inner.activate()

    def input_metadata(self) -> list:
        return self._inner.input_metadata()

    def infer(self, feeds):
        return self._inner.infer(feeds)

    def iteration(self, feeds, include_transfers: bool = False, cuda_graph: bool = False):
        return (lambda: GRAPH) if cuda_graph else (lambda: PLAIN)

    def deactivate(self) -> None:
        self._inner.deactivate()


class FakeGpuBackend(ReferenceBackend):
    name = "fake-gpu"
    description = "the reference, timed as if on a GPU (tests only)"
    capabilities = Capabilities(device="cuda", loads_onnx=False, loads_spec=True, cuda_graphs=True)

    def probe(self) -> Availability:
        return Availability(True, "1.0")

    def load(self, case, config) -> FakeGpuRunner:
        return FakeGpuRunner(super().load(case, config))


class HostOnlyGpuRunner(FakeGpuRunner):
    def iteration(self, feeds, include_transfers: bool = False, cuda_graph: bool = False):
        return HostOnly(lambda: None, "host latency only: no CUDA events in this test")


class HostOnlyGpuBackend(FakeGpuBackend):
    name = "fake-gpu-host"
    capabilities = Capabilities(device="cuda", loads_onnx=False, loads_spec=True)

    def load(self, case, config) -> HostOnlyGpuRunner:
        return HostOnlyGpuRunner(ReferenceBackend.load(self, case, config))
