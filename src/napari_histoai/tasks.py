"""Per-file tasks: open one image, run one job, write the result atomically, return a small
summary. They are what the ``histoai`` commands call (argparse stays in ``cli/``) and what the
batch runner maps over many files; the docks run the same jobs through the same engine.

Every task takes ``on_progress`` (called with each :class:`~napari_histoai.engine.jobs.Progress`)
and ``cancel`` (a :class:`~napari_histoai.errors.CancelFlag`), checks its output path before any
work starts, and raises :class:`~napari_histoai.errors.JobError` (one line) on bad input.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from .engine.jobs import Progress, run_job
from .errors import CancelFlag, JobError
from .io.outputs import check_folder_output, check_output, output_lock

__all__ = ["detect_file", "segment_file", "POINTS_SUFFIXES", "LABELS_SUFFIXES"]

POINTS_SUFFIXES = (".csv", ".geojson", ".json")
LABELS_SUFFIXES = (".tif", ".tiff")
ProgressFn = Optional[Callable[[Progress], None]]


def detect_file(image: str | os.PathLike, out: str | os.PathLike, *, model: Optional[str] = None,
                mpp: Optional[float] = None, region: Optional[Sequence[float]] = None,
                tissue_only: Optional[bool] = None, batch_size: int = 4, min_score: float = 0.0,
                device: str = "auto", on_progress: ProgressFn = None, cancel: Optional[CancelFlag] = None) -> dict:
    """Detect nuclei in ``image`` and write ``out`` (.csv: ``y,x,class,score`` level-0 px plus
    µm columns and the pixel size used; .geojson for QuPath). ``tissue_only`` defaults to True
    for whole images and False for a region. Returns {image, out, model, n, counts, mpp,
    mpp_source, notes, tiles, seconds}."""
    from .io import open_image
    from .io.points import write_points_csv, write_points_geojson
    from .methods.detection.job import detect_image_job

    out = check_output(out, POINTS_SUFFIXES, [image])
    t0 = time.perf_counter()
    with output_lock(out):
        with open_image(image) as img:
            res = run_job(detect_image_job(img, model=model, device=device, region=region, mpp=mpp,
                                           tissue_only=region is None if tissue_only is None else tissue_only,
                                           batch_size=batch_size, min_score=min_score, cancel=cancel),
                          on_progress, cancel)
        if out.name.lower().endswith((".geojson", ".json")):
            _write_or_rescue(out, lambda p: write_points_geojson(p, res.points, res.class_names, res.scores, mpp=res.mpp,
                                                                 mpp_source=res.mpp_source, model=res.model))
        else:
            _write_or_rescue(out, lambda p: write_points_csv(p, res.points, res.class_names, res.scores, mpp=res.mpp))
    return {"image": str(image), "out": str(out), "model": res.model, "n": len(res), "counts": res.counts(),
            "mpp": res.mpp, "mpp_source": res.mpp_source, "mpp_text": res.mpp_text, "notes": list(res.notes),
            "tiles": res.n_tiles, "tiles_skipped": res.n_tiles_skipped,
            "seconds": round(time.perf_counter() - t0, 2)}


def segment_file(image: str | os.PathLike, out: str | os.PathLike, *, model: Optional[str] = None,
                 config=None, save_model: Optional[str | os.PathLike] = None,
                 region: Optional[Sequence[float]] = None, channel: Optional[int] = None, threshold=None,
                 min_distance: int = 5, min_size: int = 20, mpp: Optional[float] = None, device: str = "auto",
                 tissue_only: Optional[bool] = None, on_progress: ProgressFn = None,
                 cancel: Optional[CancelFlag] = None) -> dict:
    """Self-supervised nuclei instances of ``image`` written to ``out`` (tiled OME-TIFF, uint16
    or uint32 ids): trains the contrastive segmenter on the image (or ``region``) with
    ``config`` (a ContrastiveConfig; defaults when None) unless a saved ``model`` is given.
    Labels stream through a zarr store on disk for whole slides. Returns {image, out, n, mpp,
    mpp_source, notes, trained, seconds, ...}."""
    from .engine.devices import pick_device
    from .io import open_image
    from .io.writers import write_labels_ometiff
    from .methods.contrastive import (
        ContrastiveConfig,
        SegmenterModel,
        load_model,
        segment_job,
        train_segmenter_job,
    )
    from .methods.contrastive import save_model as save_segmenter

    out = check_output(out, LABELS_SUFFIXES, [image])
    if save_model is not None:
        check_folder_output(save_model, "--save-model")
    t0 = time.perf_counter()
    dev = pick_device(device)
    summary: dict = {"image": str(image), "out": str(out), "trained": model is None}
    with output_lock(out), open_image(image) as img:
        img.require_rgb8("histoai segment")
        image_mpp = mpp if mpp is not None else img.mpp
        if model:
            seg = load_model(model)
        else:
            cfg = config or ContrastiveConfig()
            res = run_job(train_segmenter_job(img, cfg, region=region, device=dev), on_progress, cancel)
            summary.update(train_seconds=round(res.seconds, 1), restart=res.restart + 1, step=res.step,
                           selection_score=round(res.score, 3), channel=res.channel)
            if save_model:
                summary["model"] = str(save_segmenter(res, save_model, mpp=image_mpp))
            seg = SegmenterModel.from_result(res, mpp=image_mpp)
        labels = run_job(segment_job(seg, img, region=region, channel=channel, threshold=threshold, mpp=mpp,
                                     min_distance=min_distance, min_size=min_size, device=dev,
                                     tissue_only=region is None if tissue_only is None else tissue_only,
                                     cancel=cancel), on_progress, cancel)
        try:
            out_mpp = None if labels.mpp is None else labels.mpp * labels.downsample
            _write_or_rescue(out, lambda p: write_labels_ometiff(p, labels.labels, mpp=out_mpp, max_id=labels.n_objects))
        finally:
            if labels.store is not None:
                tmp = labels.store.parent if labels.store.parent.name.startswith("histoai-") else labels.store
                shutil.rmtree(tmp, ignore_errors=True)
    summary.update(n=labels.n_objects, mpp=labels.mpp, mpp_source=labels.mpp_source, mpp_text=labels.mpp_text,
                   notes=list(labels.notes), shape=list(labels.labels.shape), tiles=labels.n_tiles,
                   seconds=round(time.perf_counter() - t0, 2))
    return summary


def _write_or_rescue(out: Path, write: Callable[[Path], object]) -> None:
    """``write(out)``; when that fails at the end of a long job (disk full, folder removed or
    made read-only meanwhile), write the result into a new temporary folder instead and say
    where, in one line, so the work is not lost."""
    import tempfile

    try:
        write(out)
    except OSError as e:
        rescue = Path(tempfile.mkdtemp(prefix="histoai-rescue-")) / out.name
        try:
            write(rescue)
        except OSError:
            raise JobError(f"cannot write {out} ({e.strerror or e}), nor a copy in the temporary folder") from None
        raise JobError(f"cannot write {out} ({e.strerror or e}); the result was saved to {rescue}") from None
