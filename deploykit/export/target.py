"""Resolve an export TARGET to `(module, example_inputs)`.

TARGET is a built-in example name, `package.module:factory`, or `path/to/file.py:factory`; the
factory returns an `nn.Module` or a `(module, example_inputs)` pair.  Every way this can go wrong
is the user's to fix, so each becomes one UsageError line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from deploykit.errors import UsageError
from deploykit.export.examples import EXAMPLES


def _load_factory(target: str):
    if target in EXAMPLES:
        return EXAMPLES[target]
    location, sep, attribute = target.rpartition(":")
    if not sep or not location or not attribute:
        raise UsageError(
            f"TARGET {target!r} is not a built-in example ({', '.join(EXAMPLES)}), package.module:factory or file.py:factory"
        )
    try:
        if location.endswith(".py"):
            path = Path(location)
            if not path.is_file():
                raise UsageError(f"TARGET file {location} does not exist")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:  # not for a .py file: its suffix names the source loader
                raise UsageError(f"TARGET file {location} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault(path.stem, module)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(location)
    except UsageError:
        raise
    except SystemExit as error:
        raise UsageError(f"TARGET {target!r} called sys.exit({error.code}) while importing") from None
    except Exception as error:  # noqa: BLE001 - whatever the user's module raises on import
        raise UsageError(f"TARGET {target!r} does not import: {type(error).__name__}: {error}") from None
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise UsageError(f"TARGET {target!r}: {location} has no callable {attribute!r}")
    return factory


def resolve(target: str) -> tuple[Any, tuple | None]:
    """Call the factory: returns (module, example_inputs or None)."""
    factory = _load_factory(target)
    try:
        made = factory()
    except UsageError:
        raise
    except SystemExit as error:
        raise UsageError(f"factory {target!r} called sys.exit({error.code})") from None
    except Exception as error:  # noqa: BLE001
        first = str(error).splitlines()[0] if str(error) else ""
        raise UsageError(f"factory {target!r} raised {type(error).__name__}: {first}") from None
    import torch

    inputs = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, inputs = made
        inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise UsageError(f"factory {target!r} returned example inputs that are not all tensors")
    if not isinstance(made, torch.nn.Module):
        raise UsageError(
            f"factory {target!r} returned {type(made).__name__}, expected an nn.Module or (module, example_inputs)"
        )
    return made, inputs


def check_runs(module: Any, inputs: tuple, target: str) -> None:
    """Run the module once so a wrong --input-shape is one line, not an exporter traceback."""
    import torch

    try:
        with torch.no_grad():
            module(*inputs)
    except Exception as error:  # noqa: BLE001
        shapes = ", ".join("x".join(map(str, t.shape)) for t in inputs)
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"{target} does not run on input shape(s) {shapes}: {first}") from None
