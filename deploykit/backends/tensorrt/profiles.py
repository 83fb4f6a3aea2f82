"""TensorRT build profiles per target GPU: `engines/profiles/<name>.yaml`, chosen by name.

A profile holds what a deployment engineer tunes per GPU and would otherwise pass to trtexec by
hand: the builder optimisation level, the workspace limit, the build precisions the GPU has
tensor cores for, one optimisation profile for dynamic shapes, and whether latency is timed with
CUDA graphs.  Each file is checked against a strict schema when it loads, so a typo is one line
naming the file and the key, never a default silently used instead.

The profiles live in the repository's `engines/profiles/`; an installed wheel carries them as
`deploykit/_engines/profiles/` (pyproject.toml maps the folder, as for `conformance/`), and
DEPLOYKIT_ENGINES_DIR points at another folder with the same layout.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from deploykit.errors import UsageError
from deploykit.paths import SOURCE_ROOT
from deploykit.schema import known_name, validated
from deploykit.vocabulary import PRECISIONS
from deploykit.yamlfile import read_yaml

DEFAULT_PROFILE = "default"
#: chooses the profile where a command has no option for it (conformance runs; their workers inherit it)
PROFILE_ENVIRONMENT = "DEPLOYKIT_ENGINE_PROFILE"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def profiles_dir() -> Path:
    """The override if set, else the installed package's copy, else the repository's engines/profiles/."""
    override = os.environ.get("DEPLOYKIT_ENGINES_DIR")
    if override:
        return Path(override) / "profiles"
    packaged = resources.files("deploykit").joinpath("_engines").joinpath("profiles")
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return SOURCE_ROOT / "engines" / "profiles"


def _size(value: Union[int, str]) -> int:
    """Bytes from `8G`, `512MiB`, `1.5G` or a byte count (powers of 1024)."""
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"must be a size such as 512M or 8G, got {value!r}")
        size = int(float(match.group(1)) * 1024 ** "bkmgt".index((match.group(2) or "b").lower()))
    if size < 1:
        raise ValueError(f"must be above 0, got {value!r}")
    return size


Positive = Annotated[StrictInt, Field(ge=1)]
Dims = Annotated[tuple[Positive, ...], Field(min_length=1)]
Precision = Annotated[StrictStr, known_name("precision", PRECISIONS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchRange(_Strict):
    """The range of a dynamic first (batch) axis, for every input that has one."""

    min: Positive = 1
    opt: Positive
    max: Positive

    @model_validator(mode="after")
    def _ordered(self) -> "BatchRange":
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"needs min <= opt <= max, got {self.min}, {self.opt}, {self.max}")
        return self


class ShapeRange(_Strict):
    """min/opt/max shapes of one named input (TensorRT's optimisation profile for it)."""

    min: Dims
    opt: Dims
    max: Dims

    @model_validator(mode="after")
    def _ordered(self) -> "ShapeRange":
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError(f"min, opt and max need one rank, got {list(self.min)}, {list(self.opt)}, {list(self.max)}")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"needs min <= opt <= max on every axis, got {list(self.min)}, {list(self.opt)}, {list(self.max)}")
        return self


class Shapes(_Strict):
    batch: Optional[BatchRange] = None
    inputs: dict[StrictStr, ShapeRange] = Field(default_factory=dict)


class ProfileFile(_Strict):
    """The schema of one `engines/profiles/<name>.yaml`."""

    description: StrictStr = ""
    #: GPU names this profile is for (substrings of the driver's device name); empty: any GPU
    gpus: tuple[Annotated[StrictStr, Field(min_length=1)], ...] = ()
    #: TensorRT's builder optimisation level 0-5; None: TensorRT's default (3)
    builder_optimization_level: Optional[Annotated[StrictInt, Field(ge=0, le=5)]] = None
    #: workspace memory-pool limit; None: TensorRT's default (the device's memory)
    workspace: Optional[Annotated[Union[StrictInt, StrictStr], AfterValidator(_size)]] = None
    precisions: Annotated[tuple[Precision, ...], Field(min_length=1)] = tuple(PRECISIONS)
    #: time latency by replaying a CUDA graph of one inference (launch overhead excluded)
    cuda_graphs: StrictBool = False
    shapes: Shapes = Shapes()


class EngineProfile(ProfileFile):
    """A loaded profile: its file's settings and its name, which is the file's name."""

    name: StrictStr

    def build_settings(self) -> dict:
        """What changes the engine TensorRT builds (not the description, GPU names or timing)."""
        return self.model_dump(include={"name", "builder_optimization_level", "workspace"})

    def gpu_mismatch(self, device_name: str) -> str | None:
        """Why this profile is not meant for `device_name`, or None."""
        if not self.gpus or any(gpu.lower() in device_name.lower() for gpu in self.gpus):
            return None
        return f"engine profile {self.name} is for {', '.join(self.gpus)} GPUs, this GPU is {device_name}"


def known_profiles() -> list[str]:
    return sorted(path.stem for path in profiles_dir().glob("*.yaml"))


def _profile_path(choice: str) -> Path:
    if choice.endswith((".yaml", ".yml")) or os.sep in choice:
        return Path(choice)
    path = profiles_dir() / f"{choice}.yaml"
    if not path.is_file():
        raise UsageError(f"unknown engine profile {choice!r}; known: {', '.join(known_profiles()) or 'none'} (in {profiles_dir()})")
    return path


def load_profile(choice: str) -> EngineProfile:
    """A profile by name (`h100`) or path (`my-gpu.yaml`); any problem is one UsageError line."""
    path = _profile_path(choice)
    where = f"engine profile {path}"
    settings = validated(ProfileFile, read_yaml(path, "engine profile"), where)
    return EngineProfile(name=path.stem, **settings.model_dump())


def chosen_profile(hint: str | None) -> str:
    """A build config's `profile` hint, else DEPLOYKIT_ENGINE_PROFILE, else `default`."""
    return hint or os.environ.get(PROFILE_ENVIRONMENT) or DEFAULT_PROFILE
