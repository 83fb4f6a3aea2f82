"""Where deploykit finds its conformance data (matrices, known divergences, baselines)."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository's conformance/ folder; DEPLOYKIT_CONFORMANCE_DIR points elsewhere if needed.
CONFORMANCE_DIR = Path(
    os.environ.get("DEPLOYKIT_CONFORMANCE_DIR", Path(__file__).resolve().parents[1] / "conformance")
)
MATRICES_DIR = CONFORMANCE_DIR / "matrices"
KNOWN_DIVERGENCES = CONFORMANCE_DIR / "known_divergences.yaml"
DEFAULT_DB = Path("deploykit-results.db")
