"""Shared fixtures. Real data lives in ../shared/data (read-only; never copied into the repo)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

# pytest-qt loads PyQt6 before any test runs; as in the GUI (see napari_histoai/widgets/__init__),
# triton must not be imported after it (tests/test_gui_torch.py checks this in a fresh process)
if "triton" not in sys.modules:
    sys.modules["triton"] = None

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HISTOAI_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "README.md").is_file():
        pytest.skip(f"shared data not found at {DATA} (set HISTOAI_DATA)")
    return DATA


@pytest.fixture(scope="session")
def slides_dir(data_dir) -> Path:
    return data_dir / "slides"


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return ROOT / "resources" / "sample_he.tif"


@pytest.fixture(scope="session")
def real_tiles(data_dir):
    from napari_histoai.io.mosaic import crchisto_tiles

    return crchisto_tiles(data_dir, n=16)


@pytest.fixture(scope="session")
def mosaic_slide(tmp_path_factory, real_tiles) -> Path:
    """A 6000 x 7000 px pyramidal OME-TIFF (SubIFDs, JPEG tiles) built from real H&E tiles."""
    from napari_histoai.io.mosaic import write_mosaic_slide

    p = tmp_path_factory.mktemp("slides") / "mosaic.ome.tif"
    return write_mosaic_slide(p, real_tiles, (6000, 7000), mpp=0.5, period=4)


@pytest.fixture(autouse=True)
def _user_models(tmp_path, monkeypatch):
    """Trained models of a test go to a temporary folder, never to the user's home."""
    monkeypatch.setenv("HISTOAI_MODELS", str(tmp_path / "user_models"))


def crc_image(data_dir, name="img1", split="train"):
    from PIL import Image

    return np.asarray(Image.open(data_dir / "crchisto" / split / "images" / f"{name}.png").convert("RGB"))


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one thread is faster, and avoids OpenMP spinning on a busy 2-core box."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
