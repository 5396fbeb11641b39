"""Where bundled files live: the top-level ``resources/`` folder of the project.
``src/napari_histoai/resources`` is a symlink to it, so wheels carry the files as package data
(``napari_histoai/resources/...``) and editable installs read them in place."""

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


def fluorescence_source() -> tuple[Path, Path]:
    """(images folder, masks folder) of the bundled CC0 fluorescence source set (BBBC039 crops)."""
    root = resources_dir() / "fluorescence"
    return root / "images", root / "masks"
