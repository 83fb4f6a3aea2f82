"""The on-disk cache of built TensorRT engines and tactic timing caches.

Building an engine takes seconds to minutes, and a serialized engine is valid only for the exact
TensorRT version and GPU model it was built with.  An engine is therefore stored under a key that
hashes everything that decides its content: the model's bytes, the build (precision, strong
typing, builder flags, the profile's optimisation level, workspace and resolved input shapes), the
TensorRT and Polygraphy versions, the GPU's name and its compute capability.  A changed part gives
a new key, so a stale engine is never loaded; an unchanged one is reused.

Layout (content-addressed): `<root>/<key[:2]>/<key>.engine`, with `<key>.json` beside it saying
what the key covers.  Writes go to a temporary file in the same folder and are renamed into
place, so a reader sees a whole engine or none, also when two processes build the same one.
The tactic timing cache (`<root>/timing/<device key>.cache`) is shared by every model built with
one TensorRT version on one GPU model; Polygraphy locks it while reading and merging.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

#: the cache folder; default $XDG_CACHE_HOME/deploykit/engines (~/.cache/deploykit/engines)
CACHE_ENVIRONMENT = "DEPLOYKIT_ENGINE_CACHE"


@dataclass(frozen=True)
class BuildHost:
    """The software and GPU an engine is built with: an engine is valid only for these."""

    tensorrt: str
    polygraphy: str
    gpu: str
    compute_capability: str


def default_root() -> Path:
    override = os.environ.get(CACHE_ENVIRONMENT)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deploykit" / "engines"


def _digest(document: dict) -> str:
    """sha256 of a canonical JSON text: key order and whitespace never change a key."""
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def key_document(model_bytes: bytes, build: dict, host: BuildHost) -> dict:
    """Everything an engine's key covers, as stored beside the engine."""
    return {"model_sha256": hashlib.sha256(model_bytes).hexdigest(), "build": build, "host": asdict(host)}


def engine_key(model_bytes: bytes, build: dict, host: BuildHost) -> str:
    return _digest(key_document(model_bytes, build, host))


class EngineCache:
    """Serialized engines by key, and one timing cache per (TensorRT, Polygraphy, GPU model)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def engine_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.engine"

    def timing_cache_path(self, host: BuildHost) -> Path:
        return self.root / "timing" / f"{_digest(asdict(host))[:32]}.cache"

    def load(self, key: str) -> bytes | None:
        try:
            return self.engine_path(key).read_bytes()
        except OSError:
            return None

    def store(self, key: str, engine: bytes, document: dict) -> Path | None:
        """Write atomically; None when the cache cannot be written (a read-only or full disk),
        which costs a rebuild next time, never the engine just built."""
        path = self.engine_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path.with_suffix(".json"), (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
            write_atomically(path, engine)
        except OSError:
            return None
        return path


def write_atomically(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, flushed to disk, renamed over `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
