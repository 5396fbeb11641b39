"""Where bundled files live: the top-level ``resources/`` folder of the project, which the
wheel installs as ``napari_histoai/resources`` (see pyproject's package-dir mapping)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def resources_dir() -> Path:
    """Folder holding the bundled models (``models/<name>/``) and sample images."""
    for cand in (_HERE / "resources", _HERE.parent.parent / "resources"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("napari-histoai's bundled resources are missing from this install")


def sample_path(name: str = "sample_he.tif") -> Path:
    """Path of a bundled sample image."""
    return resources_dir() / name
