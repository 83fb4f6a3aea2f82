"""Where deploykit finds its conformance data: the built-in matrices and the known-divergence table.

The data has one home, the repository's `conformance/` folder, where a reader looks for it.  An
installed wheel or sdist has no repository, so pyproject.toml maps that folder's YAML into the
package as `deploykit/_conformance/` at build time (a copy made by the build, never a second copy
in the repository that could drift).  A source checkout and an editable install have no such
folder inside the package and read `conformance/` itself.  DEPLOYKIT_CONFORMANCE_DIR overrides both.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

#: The package subfolder that pyproject.toml's package-dir maps onto the repository's conformance/.
PACKAGED_DATA = "_conformance"


#: The repository a source checkout or an editable install runs from (its conformance/ and engines/ folders).
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def _packaged_dir() -> Path | None:
    """The data shipped inside an installed package, or None in a checkout or editable install.

    Only an unpacked install (what pip always makes) is used: the callers glob and open real paths.
    """
    packaged = resources.files("deploykit").joinpath(PACKAGED_DATA)
    return packaged if isinstance(packaged, Path) and packaged.is_dir() else None


def conformance_dir() -> Path:
    """The override if set, else the installed package's data, else the repository's conformance/."""
    override = os.environ.get("DEPLOYKIT_CONFORMANCE_DIR")
    if override:
        return Path(override)
    return _packaged_dir() or SOURCE_ROOT / "conformance"


CONFORMANCE_DIR = conformance_dir()
MATRICES_DIR = CONFORMANCE_DIR / "matrices"
KNOWN_DIVERGENCES = CONFORMANCE_DIR / "known_divergences.yaml"
