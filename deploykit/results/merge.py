"""`deploykit conformance merge`: the shards of one run (`--shard K/N` on N CI jobs) joined into one.

Shards must be of the same run: the same matrix (its content hash), backends, dtypes, precisions
(each compared as a set: the order they were given in changes nothing), tolerance and latency
options, and the same known-divergence table; anything else is refused in one line.  Missing
shards are named; the merged run is then incomplete, and `conformance run --resume` on the merged
database runs exactly the missing tasks.

The output appears whole or not at all: the merge writes a hidden database beside `-o`, syncs it to
disk and only then links it into place, so a merge that is killed, interrupted or out of disk
leaves no half-written `-o` behind, and the next merge runs as if it had never started (and removes
the hidden file a merge stopped by SIGKILL on this host could not).  An `-o`
that already exists is never replaced (it may be the user's only copy of a run): it is refused,
also when it appears while the merge runs.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from deploykit.errors import RunAborted, UsageError
from deploykit.results.parameters import MAX_SHARDS, as_option, same
from deploykit.results.store import Run, Store

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
            if not same(name, shard.run.parameters.get(name), first.run.parameters.get(name)):
                left, right = shard.run.parameters.get(name), first.run.parameters.get(name)
                shown = (left, right) if name == "matrix_hash" else (as_option(name, left), as_option(name, right))
                raise UsageError(f"{shard.path} and {first.path} are not shards of one run: their {name} differ"
                                 f" ({shown[0]} vs {shown[1]})")
        if shard.run.known_divergences != first.run.known_divergences:
            raise UsageError(f"{shard.path} and {first.path} were judged with different known-divergence tables")
    splits = [_split(s) for s in shards]
    counts = {count for _, count in splits}
    if len(counts) > 1:
        raise UsageError(f"the shards split the run differently: N = {', '.join(map(str, sorted(counts)))}")
    indices = [index for index, _ in splits]
    twice = sorted({i for i in indices if indices.count(i) > 1})
    if twice:
        raise UsageError(f"shard {twice[0]}/{counts.pop()} is given twice")
    return counts.pop(), indices


def _split(shard: Shard) -> tuple[int, int]:
    """The (K, N) a shard's run recorded: what `--shard K/N` accepts, or the shard is refused (a
    value no deploykit writes, e.g. N = 10^20, would otherwise cost memory in counting the missing)."""
    split = shard.run.parameters.get("shard")
    if not split:
        raise UsageError(f"{shard.path} is not a shard (it was not run with --shard K/N)")
    valid = (isinstance(split, list) and len(split) == 2 and all(type(n) is int for n in split)
             and 1 <= split[0] <= split[1] <= MAX_SHARDS)
    if not valid:
        raise UsageError(f"{shard.path} records shard {split!r}, which `--shard K/N` never writes"
                         f" (1 <= K <= N <= {MAX_SHARDS:,}); is the database damaged?")
    return split[0], split[1]


def merge(paths: list[Path], output: Path) -> MergeOutcome:
    _check_target(output)
    shards = [_read(path) for path in paths]
    count, indices = _check_same(shards)
    first = shards[0].run
    parameters = {**first.parameters, "shard": None, "merged_from": [
        {"file": str(s.path), "shard": s.run.parameters["shard"], "status": s.run.status,
         "host": (s.run.owner or {}).get("host")} for s in shards]}
    missing = sorted(set(range(1, count + 1)) - set(indices))
    incomplete = sorted(i for s, i in zip(shards, indices) if not s.run.complete)
    planned = first.parameters.get("planned_total") or sum(s.run.planned for s in shards)  # the whole run's tasks
    with _staged(output) as staging:
        run_id, total = _write(staging, output, shards, parameters, planned, complete=not missing and not incomplete)
    return MergeOutcome(output, run_id, sorted(indices), count, missing, incomplete, total)


def _check_target(output: Path) -> None:
    """`-o` names a new database in an existing folder; an existing file is never replaced."""
    if os.path.lexists(output):  # a dangling symlink counts: it is the user's
        what = "is a directory" if output.is_dir() else "exists"
        raise UsageError(f"-o {output} {what}; merge writes a new database: give a path that does not exist")
    folder = output.parent
    if not folder.is_dir():
        raise UsageError(f"-o {output}: folder {folder} does not exist; create it or choose another path")


def _write(staging: Path, output: Path, shards: list[Shard], parameters: dict, planned: int, complete: bool) -> tuple[int, int]:
    """Every shard's results into the staging database, in one transaction: (run id, results)."""
    first = shards[0].run
    try:
        store = Store(staging)
    except RunAborted as error:  # the disk (full, a size limit): say so of -o, not of the hidden file
        raise _cannot_write(output, str(error).rsplit(": ", 1)[-1]) from None
    try:
        if store.db.execute("PRAGMA journal_mode=DELETE").fetchone()[0] != "delete":  # one file, nothing beside it
            raise _cannot_write(output, "SQLite kept a write-ahead log")
        store.db.execute("BEGIN IMMEDIATE")
        run_id = store.start_run(first.matrix, parameters, first.environment, planned, None, first.known_divergences)
        for shard in shards:
            for result in shard.results:
                store.add(run_id, result)
        if complete:
            store.finish_run(run_id)
        total = len(store.done(run_id))
        store.db.execute("COMMIT")
    except sqlite3.Error as error:
        raise _cannot_write(output, str(error)) from None
    finally:
        store.close()
    return run_id, total


def _cannot_write(output: Path, reason: str) -> RunAborted:
    return RunAborted(f"-o {output}: cannot write the merged database ({reason}); {output} was not created", resumable=False)


@contextlib.contextmanager
def _staged(output: Path) -> Iterator[Path]:
    """A new hidden file beside `output` to write; on success it is synced and linked into place,
    on any failure or interruption (Ctrl-C, SIGTERM) it is removed."""
    _remove_stale_staging(output)
    staging = output.with_name(f"{_staging_prefix(output)}{os.getpid()}-{secrets.token_hex(4)}.merging")
    try:
        os.close(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # 0o666 less the umask, as any new file
    except OSError as error:
        raise UsageError(f"-o {output}: cannot write in folder {output.parent} ({error.strerror})") from None
    try:
        yield staging
        _sync(staging)
        _publish(staging, output)
    finally:
        for leftover in (staging, *(Path(f"{staging}{suffix}") for suffix in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


def _staging_prefix(output: Path) -> str:
    """Hidden, named after -o and this host: a merge only ever cleans up after its own host's merges."""
    return f".{output.name}.{socket.gethostname()}-"


def _remove_stale_staging(output: Path) -> None:
    """What a merge into the same -o left on this host when SIGKILL stopped it (its process is gone)."""
    prefix = _staging_prefix(output)
    for path in output.parent.glob(glob.escape(prefix) + "*.merging*"):
        pid = path.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _sync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk, so a power cut cannot publish an empty file."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except OSError:
        return  # a platform that cannot open folders (Windows): the rename is still atomic
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # a file system without fsync on folders
    finally:
        os.close(descriptor)


def _publish(staging: Path, output: Path) -> None:
    """Link the finished database to `output`; never replaces a file that appeared meanwhile."""
    try:
        os.link(staging, output)  # fails if output exists: atomic and never clobbers
    except FileExistsError:
        raise UsageError(f"-o {output} appeared while merging; it was left as it is, and the merge was not written") from None
    except OSError:  # a file system without hard links
        if os.path.lexists(output):
            raise UsageError(f"-o {output} appeared while merging; it was left as it is, and the merge was not written") from None
        os.replace(staging, output)
    _sync(output.parent)
