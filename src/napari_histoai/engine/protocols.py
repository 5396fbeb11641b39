"""What the engine runs: three small model protocols.

Every model works at a stated resolution ``mpp`` (µm/px; None = any: the engine then uses the
model's ``downsample`` attribute, level-0 px per model px, default 1) on tiles of ``tile_size``
px overlapping by ``overlap`` px (both at the model's resolution; the overlap gives context and
must exceed about two nuclei). The engine reads, resamples and batches the tiles, skips
background, stitches the results seam-safely and streams labels and maps to disk.

Optional hook, any protocol: ``prepare(thumbnail, tissue)`` is called once per run before the
first tile with a low-resolution RGB view of the whole image [h, w, 3] uint8 and its tissue mask
bool [h, w] (e.g. to match the slide's stain to the training stain, or to fix a threshold).
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = ["PointDetector", "InstanceSegmenter", "DenseMap", "kind_of"]


@runtime_checkable
class PointDetector(Protocol):
    """Nuclei as points. ``classes``: class names that the returned class ids index;
    ``merge_radius`` (optional, model px, default 3): one nucleus seen on both sides of a seam."""

    name: str
    classes: list
    mpp: Optional[float]
    tile_size: int
    overlap: int

    def predict_tiles(self, tiles: Sequence[np.ndarray]) -> list:
        """RGB uint8 tiles [h, w, 3] at ``mpp`` -> per tile (points [N, 2] float (y, x) px in the
        tile, class ids [N] int64, scores [N] float in [0, 1])."""
        ...


@runtime_checkable
class InstanceSegmenter(Protocol):
    """Nuclei as instance labels."""

    name: str
    mpp: Optional[float]
    tile_size: int
    overlap: int

    def segment_tiles(self, tiles: Sequence[np.ndarray]) -> list:
        """RGB uint8 tiles [h, w, 3] at ``mpp`` -> per tile integer labels [h, w] (0 = background,
        ids unique within the tile)."""
        ...


@runtime_checkable
class DenseMap(Protocol):
    """Per-pixel class probabilities. ``channels``: the K class names; ``stride``: model px per
    output px (1 = a value per pixel; a patch classifier has its patch size)."""

    name: str
    channels: list
    mpp: Optional[float]
    tile_size: int
    overlap: int
    stride: int

    def predict_maps(self, tiles: Sequence[np.ndarray]) -> list:
        """RGB uint8 tiles [h, w, 3] at ``mpp`` -> per tile float32 [K, ceil(h / stride),
        ceil(w / stride)] in [0, 1]."""
        ...


def kind_of(model) -> str:
    """``points``, ``labels`` or ``maps``: which protocol ``model`` implements."""
    for kind, proto in (("points", PointDetector), ("labels", InstanceSegmenter), ("maps", DenseMap)):
        if isinstance(model, proto):
            return kind
    raise TypeError(f"{type(model).__name__} implements none of the engine's model protocols "
                    "(predict_tiles, segment_tiles, predict_maps)")
