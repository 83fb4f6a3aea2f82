"""Where `deploykit repro` puts a bundle, so that it never writes over what it did not write.

The bundle is written into a fresh staging folder beside the target (same filesystem) and moved
into place with rename: a write that fails half-way (a full disk, a file size limit) leaves the
target exactly as it was.  Every bundle carries `deploykit-repro.json`, naming the result it
reproduces and the SHA-256 of each file it wrote, so a previous bundle is recognised for what it
is: the target may be a new folder, an empty one, or a previous bundle of the same result (same
config, backend and build precision) whose files are all unchanged; it is then replaced whole.
Anything else (a user's own files, a bundle of another result, an edited ISSUE.md, a symlink) is
refused in one line before any work.  Nothing is ever written through a symlink: the staging
folder is new, and a previous bundle holding a symlink is no bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from deploykit.errors import UsageError

MARKER = "deploykit-repro.json"
#: the fields that make two bundles "of the same result"
IDENTITY = ("config_id", "expect", "backend", "precision")


class Marker(BaseModel):
    """The bundle's own record: which result it reproduces, how it judges, what it wrote."""

    format: int = 1
    config_id: str
    expect: str
    backend: str
    precision: str
    label: str = ""
    details: dict[str, Any] = {}
    files: dict[str, str]  # file name -> SHA-256 of what deploykit wrote

    def identity(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in IDENTITY}


@dataclass(frozen=True)
class Target:
    """The folder as the user gave it (`given`, for messages) and resolved, with what is there now."""

    given: Path
    path: Path  # absolute, its last component not resolved (a symlink there is refused, not followed)
    state: str  # "new", "empty" or "previous"
    mode: int | None  # the existing folder's permissions, kept by the replacement


def check_target(folder: Path, identity: dict[str, str], label: str) -> Target:
    """Refuse, before any work, a target the bundle must not replace; say what is there otherwise."""
    try:
        return _inspect(folder, identity, label)
    except OSError as error:  # a folder or file deploykit may not read: nothing is known to be safe to replace
        raise UsageError(f"-o {folder}: cannot read {error.filename or folder} ({error.strerror}); give another folder") from None


def _inspect(folder: Path, identity: dict[str, str], label: str) -> Target:
    path = Path(os.path.abspath(folder))
    if path.is_symlink():
        raise UsageError(f"-o {folder} is a symbolic link; give the folder itself (nothing is written through a link)")
    if not path.exists():
        return Target(folder, path, "new", None)
    if not path.is_dir():
        raise UsageError(f"-o {folder} is a file; give a folder")
    if path == Path.cwd() or path in Path.cwd().parents:
        raise UsageError(f"-o {folder} is the folder deploykit runs in (or holds it); give another folder")
    mode = stat.S_IMODE(path.stat().st_mode)
    entries = sorted(os.listdir(path))
    if not entries:
        return Target(folder, path, "empty", mode)
    marker = _read_marker(path)
    if marker is None:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise UsageError(f"-o {folder} holds files that are no deploykit repro bundle ({shown}); give a new or empty folder")
    if marker.identity() != identity:
        raise UsageError(f"-o {folder} holds the repro bundle of another result ({marker.backend} on"
                         f" {marker.label or marker.config_id}), not of {identity['backend']} on {label}; give another folder")
    _check_unchanged(folder, path, entries, marker)
    return Target(folder, path, "previous", mode)


def _read_marker(path: Path) -> Marker | None:
    """The marker of a previous bundle, or None when there is none or it is not deploykit's."""
    marker = path / MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        return Marker.model_validate_json(marker.read_bytes())
    except (OSError, ValidationError):
        return None


def _check_unchanged(folder: Path, path: Path, entries: list[str], marker: Marker) -> None:
    """Every entry is a regular file the bundle wrote, as it wrote it: replacing it loses nothing."""
    foreign = [name for name in entries if name != MARKER and name not in marker.files]
    if foreign:
        raise UsageError(f"-o {folder} holds files the repro bundle did not write ({', '.join(foreign[:4])});"
                         " move them away or give another folder")
    for name in entries:
        if name == MARKER:
            continue
        entry = path / name
        if not stat.S_ISREG(entry.lstat().st_mode):
            raise UsageError(f"-o {folder}: {name} is no longer the file deploykit wrote (a link or folder now);"
                             " move it away or give another folder")
        if _sha256(entry) != marker.files[name]:
            raise UsageError(f"-o {folder}: {name} was changed since deploykit wrote it; move it away or give another folder")


def _sha256(path: Path) -> str:
    """The file's hash, read without following a symlink that replaced it meanwhile."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    digest = hashlib.sha256()
    with os.fdopen(descriptor, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bundle_folder(target: Target, identity: dict[str, str], label: str, details: dict[str, Any],
                        fill: Callable[[Path], list[str]]) -> list[str]:
    """Fill a fresh staging folder with `fill`, add the marker, and move it into place.

    Returns the file names `fill` wrote.  Any failure removes the staging folder and leaves the
    target as it was; OSError is left to the caller to word.
    """
    with _staging(target) as staging:
        files = fill(staging)
        hashes = {name: _sha256(staging / name) for name in files}
        marker = Marker.model_validate({**identity, "label": label, "details": details, "files": hashes})
        (staging / MARKER).write_text(json.dumps(marker.model_dump(), indent=2) + "\n")
        if target.mode is not None:  # the replaced folder's permissions, set once the files are in
            staging.chmod(target.mode)
        _install(staging, target)
    return files


@contextmanager
def _staging(target: Target) -> Iterator[Path]:
    """A new folder beside the target, removed again unless it was moved into place."""
    try:
        target.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"-o {target.given}: cannot create the folder {target.path.parent} ({error.strerror})") from None
    staging = _fresh_name(target.path, "new")
    staging.mkdir()  # the umask's permissions, as a plain mkdir of the target would have
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when it was moved into place


def _fresh_name(path: Path, role: str) -> Path:
    """A hidden name beside `path` that nothing else uses."""
    return path.with_name(f".{path.name}.deploykit-{role}-{os.getpid()}-{secrets.token_hex(4)}")


def _install(staging: Path, target: Target) -> None:
    """Rename the staging folder onto the target; a previous bundle is moved aside first and
    restored if the rename fails, then removed."""
    if target.state != "previous":
        try:
            os.rename(staging, target.path)  # onto a missing or empty folder: atomic
        except OSError as error:
            raise UsageError(f"-o {target.given}: cannot move the bundle into place ({error.strerror});"
                             " was the folder filled meanwhile?") from None
        return
    aside = _fresh_name(target.path, "old")
    os.rename(target.path, aside)
    try:
        os.rename(staging, target.path)
    except BaseException:
        os.rename(aside, target.path)
        raise
    shutil.rmtree(aside, ignore_errors=True)  # the previous bundle, every file checked unchanged
