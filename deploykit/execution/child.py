"""The isolation child: `python -m deploykit.execution.child` reads one pickled request on stdin, runs it
through the execution path and writes the pickled Outcome on stdout (see deploykit.execution.isolation).

A module of its own because it is the one place that needs both the spawning side and `execute.run_backend`;
kept apart, neither of those imports the other.
"""

from __future__ import annotations

import pickle
import sys

from deploykit import backends as registry
from deploykit.execution.execute import run_backend


def main() -> None:
    name, availability, case, config, timing = pickle.loads(sys.stdin.buffer.read())
    outcome = run_backend(registry.get(name), availability, case, config, timing)
    sys.stdout.buffer.write(pickle.dumps(outcome))


if __name__ == "__main__":
    main()
