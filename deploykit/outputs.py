"""One check, before any work, that no path a command writes is a path it reads.

`conformance run --db r.db --json r.db` used to replace the results database with JSON, and
`lint m.onnx --json m.onnx` the model itself.  Every command therefore calls `check_paths` first
with what it reads and what it writes, named by the options the user typed:

    check_paths(inputs={"MODEL": model}, databases={"--db": db}, outputs={"--json": json_path})

- `inputs`: files the command reads (a model, a matrix YAML, a baseline, shards, a table).  A
  value may be None (option not given), a str or Path, or an iterable of them (SHARDS...).  One
  that does not exist is skipped: nothing is there to destroy, and a name such as `smoke` or a
  built-in profile is no file.
- `databases`: results databases, read or written.  Always checked, existing or not (a run
  creates its --db), and with SQLite's files beside them (`-wal`, `-shm`, `-journal`): writing
  over a journal corrupts the database as surely as writing over the database.
- `outputs`: files the command writes.  `output_folders`: folders it writes into (`generate
  --out`, `repro -o`), which must not equal or contain an input, a database or another output.

Two paths are the same file when `os.path.samefile` says so (symlinks, hard links, `./x` vs
`x`, relative vs absolute, a path through a symlinked folder), or, when one of them does not exist
yet, when their fully resolved paths (`os.path.realpath`) are equal.  A clash is a UsageError (one
line, exit 2) naming both options, raised before anything is read or written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from itertools import combinations
from pathlib import Path

from deploykit.errors import UsageError

#: an option's value: absent, one path, or several (a variadic argument)
Given = str | os.PathLike | Iterable[str | os.PathLike] | None
#: files SQLite keeps beside a database while it writes (WAL mode) or after a crash (rollback journal)
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def check_paths(
    *,
    inputs: Mapping[str, Given] | None = None,
    databases: Mapping[str, Given] | None = None,
    outputs: Mapping[str, Given] | None = None,
    output_folders: Mapping[str, Given] | None = None,
) -> None:
    """Refuse, before any work, an output that is an input, a database, another output, or lies in
    an output folder; and an output folder that equals or contains any of them."""
    read = [(label, path, False) for label, path in _flatten(inputs) if os.path.lexists(path)]
    read += [(label, path, True) for label, path in _flatten(databases)]
    files, folders = _flatten(outputs), _flatten(output_folders)
    for (label, path), (other_label, other) in combinations(files, 2):
        if _same_file(path, other):
            raise UsageError(f"{label} {path} and {other_label} {other} are the same file; give two different paths")
    for label, path in files:
        for other_label, other, is_database in read:
            _refuse_same(label, path, other_label, other, is_database)
    for label, folder in folders:
        for other_label, other in [(other_label, other) for other_label, other, _ in read] + files:
            if _same_file(folder, other) or _inside(other, folder):
                relation = "is" if _same_file(folder, other) else "holds"
                raise UsageError(f"{label} {folder} {relation} {other_label} {other}, which it must not write over;"
                                 " give another folder")
    for (label, folder), (other_label, other) in combinations(folders, 2):
        if _same_file(folder, other) or _inside(other, folder) or _inside(folder, other):
            raise UsageError(f"{label} {folder} and {other_label} {other} overlap; give two separate folders")


def _refuse_same(label: str, path: str, other_label: str, other: str, is_database: bool) -> None:
    """The one-line refusal for an output file that is an input, or a database or its journal."""
    if _same_file(path, other):
        raise UsageError(f"{label} {path} is {other_label} {other}: writing it would destroy what the command reads;"
                         " give another path")
    if is_database:
        for suffix in SQLITE_SIDE_FILES:
            if _same_file(path, f"{other}{suffix}") or _same_file(path, f"{_real(other)}{suffix}"):
                raise UsageError(f"{label} {path} is the {suffix[1:]} file SQLite keeps beside {other_label} {other};"
                                 " give another path")


def _flatten(given: Mapping[str, Given] | None) -> list[tuple[str, str]]:
    """(option, path) pairs, one per path: None and empty values dropped, iterables spread out."""
    pairs = []
    for label, value in (given or {}).items():
        values = [value] if isinstance(value, (str, os.PathLike)) or value is None else list(value)
        pairs += [(label, os.fspath(v)) for v in values if v is not None and os.fspath(v) not in ("", "-")]
    return pairs


def _real(path: str) -> str:
    """The fully resolved absolute path, for paths that may not exist yet."""
    return os.path.realpath(os.path.abspath(path))


def _same_file(path: str, other: str) -> bool:
    """Whether two paths name one file: the same inode when both exist (hard links too), else the
    same resolved path (a file a command is about to create)."""
    try:
        if os.path.exists(path) and os.path.exists(other):
            return os.path.samefile(path, other)
    except OSError:  # unreadable metadata: fall back to comparing the names
        pass
    return _real(path) == _real(other)


def _inside(path: str, folder: str) -> bool:
    """Whether `path` lies somewhere below `folder` (both resolved, symlinks included)."""
    real_path, real_folder = Path(_real(path)), Path(_real(folder))
    return real_folder != real_path and real_folder in real_path.parents


def factory_source(target: str) -> str | None:
    """The Python file an `export` TARGET (`file.py:factory` or `package.module:factory`) is read
    from, found as the import will find it, without running it; None for a built-in example."""
    import importlib.util

    location, sep, _ = target.rpartition(":")
    if not sep or not location:
        return None
    if location.endswith(".py"):
        return location
    try:
        spec = importlib.util.find_spec(location)  # imports the parent packages of a dotted name, not the module
    except Exception:  # noqa: BLE001 - whatever a parent package raises on import; the export says it later
        return None
    return spec.origin if spec is not None and spec.has_location else None
