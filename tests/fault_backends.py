"""Backends that misbehave on purpose, to prove the harness isolates them."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from deploykit.backends.base import Availability, Backend, CallableRunner
from deploykit.backends.reference import ReferenceBackend


class CrashBackend(Backend):
    name = "crashy"

    def probe(self) -> Availability:
        return Availability(True, "0")

    def runner(self, case, threads=None):
        return CallableRunner(lambda feeds: os.kill(os.getpid(), signal.SIGSEGV))


class HangBackend(Backend):
    name = "hangy"

    def probe(self) -> Availability:
        return Availability(True, "0")

    def runner(self, case, threads=None):
        return CallableRunner(lambda feeds: time.sleep(3600))


class SlowBackend(ReferenceBackend):
    """The reference, 0.3 s late per config: long enough to kill a run in the middle."""

    name = "slowish"

    def runner(self, case, threads=None):
        inner = super().runner(case, threads)

        def infer(feeds):
            time.sleep(0.3)
            return inner.infer(feeds)

        return CallableRunner(infer, inner.activate)


class DriftBackend(ReferenceBackend):
    """The reference answer perturbed by 1e-3 relative: a real defect in float32."""

    name = "drifty"

    def accumulation(self, dtype):
        return Backend.accumulation(self, dtype)  # what a float32 runtime declares, not the oracle's float64

    def runner(self, case, threads=None):
        inner = super().runner(case, threads)

        def infer(feeds):
            y = inner.infer(feeds)
            return (y.astype(np.float64) * (1 + 1e-3)).astype(y.dtype)

        return CallableRunner(infer, inner.activate)
