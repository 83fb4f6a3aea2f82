"""Run one backend in a child process, for runtimes that can abort the whole process.

A Rust panic that crosses an FFI boundary (tract) aborts the interpreter: in the harness's workers
that costs one task, but `profile`, `export` and in-process callers would die with it.  For a backend
that declares `aborts_process`, `execute.run_backend` runs here instead: a fresh interpreter
(`python -m deploykit.execution.child`, so no caller's `__main__` is re-imported) gets the request
pickled on stdin and answers a pickled Outcome on stdout.  If it dies, the Outcome is `crash`
with the runtime's last message from stderr (a panic says where and why).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from dataclasses import replace

from deploykit.execution.outcome import Outcome, one_line

#: Set in processes where a runtime that aborts costs one task only (the harness's workers, and
#: the child this module starts).
ISOLATED = "DEPLOYKIT_ISOLATED_PROCESS"


def isolated() -> bool:
    return bool(os.environ.get(ISOLATED))


def last_message(stderr: bytes) -> str:
    """The runtime's own words: the first Rust panic (where, and why), else the last line on stderr."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "panicked at" in line:
            where = line.split("panicked at", 1)[1].strip().rstrip(":")
            why = lines[index + 1] if index + 1 < len(lines) else ""
            return f"panic at {where}: {why}"
    return lines[-1] if lines else ""


def run_isolated(name: str, availability, case, config, timing):
    """`execute.run_backend` for backend `name` in a child interpreter; `crash` if it dies."""
    request = pickle.dumps((name, availability, replace(case, module=None), config, timing))
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-m", "deploykit.execution.child"], input=request, capture_output=True,
                           env={**os.environ, ISOLATED: "1", "RUST_BACKTRACE": "0"}, check=False)
    if child.returncode == 0 and child.stdout:
        return pickle.loads(child.stdout)
    message = last_message(child.stderr)
    reason = f"the runtime aborted the process (exit code {child.returncode})" + (f": {one_line(RuntimeError(message))}" if message else "")
    outcome = Outcome("crash", reason)
    outcome.duration_ms = (time.perf_counter() - started) * 1e3
    return outcome
