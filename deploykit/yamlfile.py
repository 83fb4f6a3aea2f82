"""Read a user-editable YAML file (a matrix, the known-divergence table) or fail in one line.

Every way a file can be unusable (missing, a folder, a FIFO that would block forever, unreadable,
not UTF-8, malformed, a key given twice) becomes a UsageError naming the file, never a traceback
and never a silently different value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deploykit.errors import UsageError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping; plain YAML keeps the last silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"key {key!r} is given twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep)


def check_regular_file(path: Path, what: str) -> None:
    """A folder, a missing path or a FIFO/device is named as such before anything reads it."""
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory, not a file")
    if not path.exists():
        raise UsageError(f"{what} {path} does not exist")
    if not path.is_file():
        raise UsageError(f"{what} {path} is not a regular file")


def read_yaml(path: Path, what: str) -> Any:
    """The parsed document; `what` ("matrix", "known-divergence table") starts every message."""
    check_regular_file(path, what)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        bad = error.object[error.start]
        raise UsageError(f"{what} {path}: not UTF-8 text (byte 0x{bad:02x} at offset {error.start})") from None
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UsageError(f"{what} {path}: malformed YAML{where}: {problem}") from None
