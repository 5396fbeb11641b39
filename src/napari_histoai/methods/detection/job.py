"""The detect job: a detector by name, run by the engine over an image region or whole slide.

The engine (:func:`napari_histoai.engine.inference.infer`) owns tiling, the choice of pyramid
level and resampling to the detector's resolution, tissue masks, the detector's ``prepare``
hook (stain matching for AC-Former models), batching and seam-safe stitching; this job adds the
model lookup and the score floor. One job behind the Detect dock, ``histoai detect`` and the
batch runner.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ...engine.inference import PointsResult, infer
from ...engine.jobs import Job, Progress

__all__ = ["detect_image_job", "PointsResult"]


def detect_image_job(
    image,
    model: Optional[str] = None,
    device: str = "auto",
    region: Optional[Sequence[float]] = None,
    tissue_only: bool = True,
    batch_size: int = 4,
    min_score: float = 0.0,
    mpp: Optional[float] = None,
    fast: bool = False,
    tta: bool = False,
    cancel=None,
) -> Job:
    """Detect nuclei in ``image`` (a SlideImage, a path or an RGB array) with ``model`` (name or
    folder; default = the bundled model) over ``region`` = (y0, x0, y1, x1) level-0 px (whole
    image when None). ``mpp``: µm/px for images whose file has none (or to override it).
    ``fast``: the model's dense head alone (AC-Former models with one; see ``load_detector``);
    ``tta``: that head averaged over 4 flips of each tile (about 3x slower, slightly better).

    Yields :class:`Progress`; returns a :class:`~napari_histoai.engine.inference.PointsResult`
    (points in level-0 px, the pixel size used and where it came from, notes).
    """
    from .registry import default_detector, load_detector

    name = model or default_detector()
    yield Progress(0, 0, f"loading {name}" + (" (fast)" if fast else "") + (" (test-time flips)" if tta else ""))
    detector = load_detector(name, device=device, fast=fast, tta=tta)
    result = yield from infer(image, detector, region, mpp=mpp, tissue_only=tissue_only,
                              batch_size=batch_size, cancel=cancel)
    if min_score > 0:
        result.select(result.scores >= min_score)
    return result
