"""Backends that misbehave on purpose, to prove the harness isolates them."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import numpy as np

from deploykit.backends.base import Availability, Backend, BuildConfig, CallableRunner
from deploykit.backends.reference import ReferenceBackend


class CrashBackend(Backend):
    name = "crashy"

    def probe(self) -> Availability:
        return Availability(True, "0")

    def load(self, case, config):
        return CallableRunner(lambda feeds: os.kill(os.getpid(), signal.SIGSEGV))


class SigkillBackend(Backend):
    """Dies by SIGKILL, as a worker the kernel's out-of-memory killer picks does."""

    name = "killed"

    def probe(self) -> Availability:
        return Availability(True, "0")

    def load(self, case, config):
        return CallableRunner(lambda feeds: os.kill(os.getpid(), signal.SIGKILL))


class StartupKillerBackend(ReferenceBackend):
    """Fine in the parent; kills every worker process that loads it, before the worker is ready."""

    name = "nostart"

    def probe(self) -> Availability:
        if multiprocessing.parent_process() is not None:
            os._exit(3)
        return super().probe()


class HangBackend(Backend):
    name = "hangy"

    def probe(self) -> Availability:
        return Availability(True, "0")

    def load(self, case, config):
        return CallableRunner(lambda feeds: time.sleep(3600))


class SlowBackend(ReferenceBackend):
    """The reference, 0.3 s late per config: long enough to kill a run in the middle."""

    name = "slowish"

    def load(self, case, config):
        inner = super().load(case, config)

        def activate():
            log = os.environ.get("DEPLOYKIT_TEST_LOG")
            if log:  # every execution (negative cases too), so a test can tell a resumed run re-ran nothing
                with open(log, "a") as handle:
                    handle.write(f"{case.spec.id}\n")
            inner.activate()

        def infer(feeds):
            time.sleep(0.3)
            return inner.infer(feeds)

        return CallableRunner(infer, activate)


class DriftBackend(ReferenceBackend):
    """The reference answer perturbed by 1e-3 relative: a real defect in float32."""

    name = "drifty"

    def accumulation(self, dtype, config=BuildConfig()):
        return Backend.accumulation(self, dtype, config)  # what a float32 runtime declares, not the oracle's float64

    def load(self, case, config):
        inner = super().load(case, config)

        def infer(feeds):
            return {name: (y.astype(np.float64) * (1 + 1e-3)).astype(y.dtype) for name, y in inner.infer(feeds).items()}

        return CallableRunner(infer, inner.activate)


class MinimalOnnxBackend(Backend):
    """A third-party engine in a dozen lines: a loader and the base class's defaults, nothing
    registered anywhere else.  ONNX Runtime stands in for the engine."""

    name = "minimal"
    description = "an engine that only implements the contract"

    def probe(self) -> Availability:
        return Availability(True, "1.0")

    def load(self, case, config):
        import onnxruntime

        state = {}

        def prepare():
            state["session"] = onnxruntime.InferenceSession(case.model_bytes, providers=["CPUExecutionProvider"])

        def infer(feeds):
            names = [o.name for o in state["session"].get_outputs()]
            return dict(zip(names, state["session"].run(names, feeds)))

        return CallableRunner(infer, prepare)


class AbsentBackend(ReferenceBackend):
    """A backend whose package is missing on this machine."""

    name = "absent"

    def probe(self) -> Availability:
        return Availability(False, None, "needs the 'absent' package; install it with: pip install absent")


class HostileBackend(Backend):
    """Fails every config with a message written to break reports: rich markup, a live link, HTML that
    runs or hides a page, Markdown pipes and code, a terminal escape, controls and a bidi override."""

    name = "hostile"
    MESSAGE = ("[/bold]boom [link=http://x]y[/link] <img src=x onerror=alert(1)> <!-- | `t` \x1b[31mred\x00\x01"
               " \u202egnp.exe")

    def probe(self) -> Availability:
        return Availability(True, "0")

    def load(self, case, config):
        def infer(feeds):
            raise RuntimeError(self.MESSAGE)

        return CallableRunner(infer)
