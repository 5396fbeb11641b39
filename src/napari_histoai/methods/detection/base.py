"""The interface every nuclei detector implements (classical baseline, AC-Former, ...).

The tiled detect job (:mod:`.job`) owns tiling, resampling to the detector's resolution,
tissue masks and seam stitching; a detector only turns RGB tiles at its own resolution into
points.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Detector(Protocol):
    """A loaded, ready-to-run nuclei detector.

    Attributes
    ----------
    name: str            shown in the model selector and written to exports
    classes: list[str]   class names; predicted class ids index this list
    mpp: float | None    µm per pixel the detector works at (None = any resolution)
    tile_size: int       preferred input tile side (px, at ``mpp``)
    overlap: int         context overlap between tiles (px, at ``mpp``); > 2 nucleus diameters
    """

    name: str
    classes: list[str]
    mpp: Optional[float]
    tile_size: int
    overlap: int

    def predict_tiles(
        self, tiles: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Detect nuclei on RGB uint8 tiles [H, W, 3] (each at ``mpp``).

        Returns one (points [N, 2] float (y, x) px in the tile's frame, classes [N] int64,
        scores [N] float in [0, 1]) per tile.
        """
        ...
