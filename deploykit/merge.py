"""`deploykit conformance merge`: the shards of one run (`--shard K/N` on N CI jobs) joined into one.

Shards must be of the same run: the same matrix (its content hash), backends, dtypes, precisions,
tolerance and latency options, and the same known-divergence table; anything else is refused in
one line.  Missing shards are named; the merged run is then incomplete, and `conformance run
--resume` on the merged database runs exactly the missing tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import UsageError
from deploykit.store import Run, Store

#: Run parameters every shard must share (jobs, threads and timeout may differ per CI machine).
SAME = ("matrix_hash", "backends", "dtypes", "precisions", "tolerance", "latency")


@dataclass
class Shard:
    path: Path
    run: Run
    results: list


@dataclass
class MergeOutcome:
    output: Path
    run_id: int
    merged: list[int]  # shard indices found
    count: int  # N
    missing: list[int]
    incomplete: list[int]  # shards whose own run did not finish
    results: int

    @property
    def complete(self) -> bool:
        return not self.missing and not self.incomplete


def _read(path: Path) -> Shard:
    store = Store(path, create=False)
    try:
        run = store.latest_run()
        if run is None:
            raise UsageError(f"{path} holds no runs yet")
        return Shard(path, run, store.results(run.run_id))
    finally:
        store.close()


def _check_same(shards: list[Shard]) -> tuple[int, list[int]]:
    """N and the shard indices, after checking the shards are of one run."""
    first = shards[0]
    for shard in shards[1:]:
        for name in SAME:
            if shard.run.parameters.get(name) != first.run.parameters.get(name):
                raise UsageError(f"{shard.path} and {first.path} are not shards of one run: their {name} differ"
                                 f" ({shard.run.parameters.get(name)!r} vs {first.run.parameters.get(name)!r})")
        if shard.run.known_divergences != first.run.known_divergences:
            raise UsageError(f"{shard.path} and {first.path} were judged with different known-divergence tables")
    splits = [tuple(s.run.parameters.get("shard") or ()) for s in shards]
    if any(len(split) != 2 for split in splits):
        unsharded = next(s.path for s, split in zip(shards, splits) if len(split) != 2)
        raise UsageError(f"{unsharded} is not a shard (it was not run with --shard K/N)")
    counts = {count for _, count in splits}
    if len(counts) > 1:
        raise UsageError(f"the shards split the run differently: N = {', '.join(map(str, sorted(counts)))}")
    indices = [index for index, _ in splits]
    twice = sorted({i for i in indices if indices.count(i) > 1})
    if twice:
        raise UsageError(f"shard {twice[0]}/{counts.pop()} is given twice")
    return counts.pop(), indices


def merge(paths: list[Path], output: Path) -> MergeOutcome:
    if output.exists():
        raise UsageError(f"-o {output} exists; merge writes a new database")
    shards = [_read(path) for path in paths]
    count, indices = _check_same(shards)
    first = shards[0].run
    parameters = {**first.parameters, "shard": None, "merged_from": [
        {"file": str(s.path), "shard": s.run.parameters["shard"], "status": s.run.status,
         "host": (s.run.owner or {}).get("host")} for s in shards]}
    missing = sorted(set(range(1, count + 1)) - set(indices))
    planned = first.parameters.get("planned_total") or sum(s.run.planned for s in shards)  # the whole run's tasks
    store = Store(output)
    try:
        run_id = store.start_run(first.matrix, parameters, first.environment, planned, None, first.known_divergences)
        for shard in shards:
            for result in shard.results:
                store.add(run_id, result)
        incomplete = sorted(i for s, i in zip(shards, indices) if not s.run.complete)
        if not missing and not incomplete:
            store.finish_run(run_id)
        total = len(store.done(run_id))
    finally:
        store.close()
    return MergeOutcome(output, run_id, sorted(indices), count, missing, incomplete, total)
