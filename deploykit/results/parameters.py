"""Run parameters compared by what they mean.

`--backends ort-cpu,reference` and `--backends reference,ort-cpu` run the same tasks: lists whose
order changes nothing (backends, dtypes, precisions) compare as sets wherever a command checks
that two runs, or a run and the options given again, agree (`conformance merge`, `conformance run
--resume`, `conformance fuzz --resume`).  A different set is still a different run.
"""

from __future__ import annotations

from typing import Any

#: The most shards a run may be split into (CI runners, not tasks: no shard may be empty either).
MAX_SHARDS = 10_000
#: parameters that are lists whose order does not change what runs
UNORDERED = frozenset({"backends", "dtypes", "precisions"})


def comparable(name: str, value: Any) -> Any:
    """The value as it matters for `name`: a frozenset for an unordered list, else the value itself."""
    if name in UNORDERED and isinstance(value, (list, tuple)):
        return frozenset(value)
    return value


def same(name: str, left: Any, right: Any) -> bool:
    """Whether two values of parameter `name` ask for the same run."""
    return comparable(name, left) == comparable(name, right)


#: the command-line options a stored parameter comes from, where its name is not the option's
_FLAGS = {"tolerance": "--atol/--rtol", "latency": "--latency and its timing options"}
#: timing options as stored (TimingOptions.as_dict) -> how they are typed
_TIMING_FLAGS = (("warmup_ms", "--warmup-ms"), ("iterations", "--iterations"), ("duration_s", "--duration"))


def flag(name: str) -> str:
    """The option(s) that set parameter `name`, as a user types them."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def as_option(name: str, value: Any) -> str:
    """A stored or given parameter as the command line that asks for it (`--backends a,b`,
    `--shard 2/3`, `no --dtypes (the default)`): what a message shows, never a Python repr."""
    if value is None:
        return f"no {flag(name)} (the default)"
    if name == "shard" and isinstance(value, (list, tuple)) and len(value) == 2:
        return f"--shard {value[0]}/{value[1]}"
    if name == "tolerance" and isinstance(value, dict):
        return f"--atol {_number(value.get('atol'))} --rtol {_number(value.get('rtol'))}"
    if name == "latency" and isinstance(value, dict):
        parts = ["--latency", *(f"{option} {_number(value.get(key))}" for key, option in _TIMING_FLAGS if key in value)]
        parts += [f"--{key.replace('_', '-')}" for key in ("include_transfers", "cuda_graph") if value.get(key)]
        return " ".join(parts)
    if isinstance(value, (list, tuple)):
        return f"{flag(name)} {','.join(map(str, value))}"
    return f"{flag(name)} {_number(value)}"


def _number(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)
