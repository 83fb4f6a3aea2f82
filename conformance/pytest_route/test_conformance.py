"""The pytest route: the smoke matrix on every CPU backend, one test per (config, backend).

Run it with `pytest conformance/`; choose the matrix with DEPLOYKIT_MATRIX (default: smoke) and
the backends with DEPLOYKIT_BACKENDS_UNDER_TEST (comma-separated).  It runs in-process, so it is
the quick route; `deploykit conformance run` is the isolated, stored one.
"""

from __future__ import annotations

import os

import pytest

from deploykit import backends as registry
from deploykit.conformance.matrix import load
from deploykit.execution.execute import Executor

MATRIX = load(os.environ.get("DEPLOYKIT_MATRIX", "smoke"))
BACKENDS = registry.parse(os.environ.get("DEPLOYKIT_BACKENDS_UNDER_TEST"))


@pytest.fixture(scope="module")
def executor():
    return Executor()


def _tier(backend: str):
    """A backend that can abort the process runs each config in a child process, about a second a
    config: in this repository's test suite those cases are in the `slow` tier (tests/README.md)."""
    slow = registry.get(backend).capabilities.aborts_process
    return pytest.param(backend, marks=pytest.mark.slow if slow else ())


@pytest.mark.parametrize("backend", [_tier(backend) for backend in BACKENDS])
@pytest.mark.parametrize("spec", MATRIX.specs, ids=[s.label for s in MATRIX.specs])
def test_conformance(executor, spec, backend):
    result = executor.run(spec, backend)
    if result.verdict in ("unsupported", "unavailable"):
        pytest.skip(f"{backend}: {result.reason}")
    if result.known_divergence:
        pytest.xfail(f"known divergence {result.known_divergence}: {result.reason}")
    assert result.verdict == "pass", f"{result.verdict}: {result.reason}"
