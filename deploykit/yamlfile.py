"""Read a user-editable YAML file (a matrix, the known-divergence table) or fail in one line.

Every way a file can be unusable (missing, a folder, a FIFO that would block forever, unreadable,
not UTF-8, malformed, a key given twice) becomes a UsageError naming the file, never a traceback
and never a silently different value.

A file is also refused, in one line and before it can cost seconds or memory, past three limits,
each far above any real matrix, table or profile (the shipped ones are at most 21 KB, 6 levels
deep and 771 nodes): MAX_BYTES of text; MAX_DEPTH levels of nesting (PyYAML composes recursively:
deeper would be a RecursionError); and MAX_NODES nodes once aliases are expanded (an alias bomb,
"billion laughs", is a few lines whose expansion never ends: every later step that walks the
data, validation included, would).  No file without aliases can reach MAX_NODES within MAX_BYTES.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deploykit.errors import UsageError

#: the most text a YAML file may hold (1 MiB)
MAX_BYTES = 1 << 20
#: the deepest nesting of lists and mappings
MAX_DEPTH = 64
#: the most nodes (scalars, lists, mappings) the document may expand to, aliases expanded
MAX_NODES = 1_000_000


class _LimitExceeded(Exception):
    """A limit above was passed: the message says which, in the user's terms."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last
    silently), nesting past MAX_DEPTH as it is composed, and a document past MAX_NODES."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise _LimitExceeded(f"nested more than {MAX_DEPTH} levels deep (at line {line})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        if _measure(node, 1, {})[0] > MAX_NODES:
            raise _LimitExceeded(f"more than {MAX_NODES:,} values once its aliases are expanded (an alias bomb?);"
                                 " write the values out, or use fewer aliases")
        return self.construct_document(node)

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


def _measure(node: yaml.Node, level: int, measured: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(nodes, height) of `node` with every alias expanded, each distinct node measured once
    (`measured`), so an alias bomb is measured in the time of its few lines, never expanded.
    An alias can nest a deep anchor inside another: the height is checked here too, as the walk
    goes, so it never recurses more than MAX_DEPTH levels."""
    if level > MAX_DEPTH:
        raise _LimitExceeded(f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
    if id(node) not in measured:
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else [])
        nodes, height = 1, 1
        for child in children:
            child_nodes, child_height = _measure(child, level + 1, measured)
            nodes, height = min(nodes + child_nodes, MAX_NODES + 1), max(height, child_height + 1)
        measured[id(node)] = (nodes, height)
    nodes, height = measured[id(node)]
    if level + height - 1 > MAX_DEPTH:
        raise _LimitExceeded(f"nested more than {MAX_DEPTH} levels deep once its aliases are expanded")
    return nodes, height


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
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)  # never more, whatever the file's size
        if len(data) > MAX_BYTES:
            raise UsageError(f"{what} {path} is larger than {MAX_BYTES >> 20} MiB, the most deploykit reads from a YAML file")
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = error.object[error.start]
        raise UsageError(f"{what} {path}: not UTF-8 text (byte 0x{bad:02x} at offset {error.start})") from None
    except OSError as error:
        raise UsageError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _LimitExceeded as error:
        raise UsageError(f"{what} {path} is {error}") from None
    except (ValueError, OverflowError) as error:  # a value PyYAML cannot convert, e.g. an integer of 5000 digits
        raise UsageError(f"{what} {path}: malformed YAML: {str(error).split(';')[0]}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UsageError(f"{what} {path}: malformed YAML{where}: {problem}") from None
