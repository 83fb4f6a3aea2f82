"""How `-n N` hands out tests: whole files to a worker, and a worker's crash costs one test.

xdist's own LoadScopeScheduling hands out whole files, so a module-scoped fixture (a smoke run,
shards, a results database) runs once rather than once in each worker that got one of its tests.
But when a worker dies (a runtime's kernel raising SIGSEGV in the test process), it puts back every
file that worker ever ran, finished ones included, and the crashed test with them: the replacement
worker is then sent a file with nothing left to run, and the run waits forever for it (pytest-xdist
3.8; seen in CI, which stopped at its time limit).  CrashSafeLoadScope counts the crashed test as
done (xdist reports it as failed) and puts back only the files with tests still to run.

conftest.py imports the hook; `-p xdist_scheduling` loads it in a pytest run of other tests.
"""

from __future__ import annotations

import os

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController


class CrashSafeLoadScope(LoadScopeScheduling):
    """LoadScopeScheduling whose worker crashes re-queue only the unfinished rest of its files."""

    def remove_node(self, node: WorkerController) -> str | None:
        workload = self.assigned_work.pop(node)
        pending = [(scope, nodeid) for scope, unit in workload.items() for nodeid, done in unit.items() if not done]
        if not pending:
            return None  # a worker that finished its work and shut down
        crashed_scope, crashed = pending[0]  # a worker runs its tests in order: the first unfinished one died
        workload[crashed_scope][crashed] = True
        for scope, unit in workload.items():
            if not all(unit.values()):
                self.workqueue[scope] = unit
        for other in self.assigned_work:
            self._reschedule(other)
        return crashed


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadScopeScheduling | None:
    """Under `-n N`, whole files to a worker (CrashSafeLoadScope).  An explicit `--dist`
    (`--dist load` included) is left as asked."""
    given = (*config.invocation_params.args, *os.environ.get("PYTEST_ADDOPTS", "").split())
    if config.getoption("dist") == "load" and not any(arg.startswith("--dist") for arg in given):
        return CrashSafeLoadScope(config, log)
    return None
