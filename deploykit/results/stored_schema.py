"""What a run stores, as deploykit reads it back: its parameters (`--resume` rebuilds the run from
them: deploykit.results.dbcheck.checked_parameters) and its environment (every report shows it).

A run is finished from what it stored (matrix, backends, tolerance, latency, shard; a fuzz run's
seed and budget), so a row edited by hand or damaged must be refused naming the key, before any
of it becomes a request: otherwise a missing matrix is a KeyError and a number where a list
belongs a TypeError, mid-resume.  Keys are typed strictly, as deploykit writes them; keys other
versions add are ignored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, with_config
from typing_extensions import NotRequired, Required, TypedDict

STRICT = ConfigDict(strict=True, extra="ignore")
Names = Annotated[list[str], Field(min_length=1)]
Seconds = Annotated[float, Field(gt=0)]


@with_config(ConfigDict(strict=True, extra="forbid"))
class Tolerance(TypedDict):
    atol: Annotated[float, Field(ge=0)]
    rtol: Annotated[float, Field(ge=0)]


@with_config(ConfigDict(strict=True, extra="forbid"))
class Latency(TypedDict, total=False):
    """TimingOptions.as_dict(): the workers build TimingOptions(**latency) from it."""

    warmup_ms: Annotated[float, Field(ge=0)]
    iterations: Annotated[int, Field(ge=1)]
    duration_s: Annotated[float, Field(ge=0)]
    include_transfers: bool
    max_iterations: Annotated[int, Field(ge=1)]
    cuda_graph: bool


@with_config(STRICT)
class RunParameters(TypedDict):
    """`conformance run`'s parameters (deploykit.conformance.run._parameters)."""

    matrix: Required[str]
    backends: Required[Names]
    matrix_hash: NotRequired[str]
    dtypes: NotRequired[Names | None]
    tolerance: NotRequired[Tolerance | None]
    latency: NotRequired[Latency | None]
    precisions: NotRequired[Names | None]
    precision: NotRequired[str]  # runs from before schema 3
    timeout: NotRequired[Seconds | None]
    shard: NotRequired[Annotated[list[Annotated[int, Field(ge=1, le=10_000)]], Field(min_length=2, max_length=2)] | None]


@with_config(STRICT)
class FuzzParameters(TypedDict):
    """`conformance fuzz`'s parameters (deploykit.fuzz.search._parameters)."""

    kind: Required[str]
    backends: Required[Names]
    dtypes: Required[Names]
    seed: Required[Annotated[int, Field(ge=0)]]
    max_examples: NotRequired[Annotated[int, Field(ge=1)] | None]
    budget: NotRequired[Seconds | None]
    timeout: NotRequired[Seconds | None]


@with_config(STRICT)
class Environment(TypedDict, total=False):
    """deploykit.results.environment.collect(): what the reports lay out (a judged run adds keys of its own)."""

    packages: dict[str, str | None]
    python: str
    platform: str
    cpu: str | None
    cpu_count: int | None
    gpus: list[str]
