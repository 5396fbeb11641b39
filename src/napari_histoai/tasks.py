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

import numpy as np

from .engine.jobs import Progress, run_job
from .errors import CancelFlag, JobError
from .io.outputs import check_folder_output, check_output, output_lock

__all__ = ["detect_file", "segment_file", "heatmap_file", "train_heatmap", "instances_file", "train_adapt",
           "POINTS_SUFFIXES", "LABELS_SUFFIXES"]

POINTS_SUFFIXES = (".csv", ".geojson", ".json", ".points")  # .points: a nuclei store folder (io.point_store)
LABELS_SUFFIXES = (".tif", ".tiff")
ProgressFn = Optional[Callable[[Progress], None]]


def detect_file(image: str | os.PathLike, out: str | os.PathLike, *, model: Optional[str] = None,
                mpp: Optional[float] = None, region: Optional[Sequence[float]] = None,
                tissue_only: Optional[bool] = None, batch_size: int = 4, min_score: float = 0.0,
                device: str = "auto", fast: Optional[bool] = None, tta: Optional[bool] = None,
                on_progress: ProgressFn = None,
                cancel: Optional[CancelFlag] = None) -> dict:
    """Detect nuclei in ``image`` and write ``out`` (.csv: ``y,x,class,score`` level-0 px plus
    µm columns and the pixel size used; .geojson for QuPath; a ``.points`` folder: a nuclei store,
    see :mod:`.io.point_store`). ``tissue_only`` defaults to True
    for whole images and False for a region; ``fast``: the model's dense head alone (AC-Former
    models with one); ``tta``: that head averaged over 4 flips of each tile. Returns {image, out, model, n, counts, mpp,
    mpp_source, notes, tiles, seconds}."""
    from .io import open_image
    from .io.point_store import PointStore
    from .io.points import write_points_csv, write_points_geojson
    from .methods.detection.job import detect_image_job

    to_store = str(out).lower().rstrip("/").endswith(".points")
    if to_store and Path(out).is_dir() and any(Path(out).iterdir()) and not PointStore.is_store(out):
        raise JobError(f"--out {out} is a folder with other files in it; give a new name for the nuclei store")
    out = Path(out).expanduser() if to_store else check_output(out, POINTS_SUFFIXES, [image])
    t0 = time.perf_counter()
    with output_lock(out):
        with open_image(image) as img:
            res = run_job(detect_image_job(img, model=model, device=device, region=region, mpp=mpp,
                                           tissue_only=region is None if tissue_only is None else tissue_only,
                                           batch_size=batch_size, min_score=min_score, fast=bool(fast),
                                           tta=bool(tta), cancel=cancel),
                          on_progress, cancel)
            shape = img.shape[:2]
        if to_store:  # whole-slide results: a store the viewer opens by level of detail, exports stream from
            PointStore.create(out, res.points, res.class_ids, res.classes, res.scores, shape=shape, mpp=res.mpp,
                              attrs={"model": res.model, "mpp_source": res.mpp_source})
        elif out.name.lower().endswith((".geojson", ".json")):
            _write_or_rescue(out, lambda p: write_points_geojson(p, res.points, res.class_names, res.scores, mpp=res.mpp,
                                                                 mpp_source=res.mpp_source, model=res.model))
        else:
            _write_or_rescue(out, lambda p: write_points_csv(p, res.points, res.class_names, res.scores, mpp=res.mpp))
    return {"image": str(image), "out": str(out), "model": res.model, "n": len(res), "counts": res.counts(),
            "mpp": res.mpp, "mpp_source": res.mpp_source, "mpp_text": res.mpp_text, "notes": list(res.notes),
            "tiles": res.n_tiles, "tiles_skipped": res.n_tiles_skipped,
            "seconds": round(time.perf_counter() - t0, 2)}


def segment_file(image: str | os.PathLike, out: str | os.PathLike, *, method: Optional[str] = None,
                 model: Optional[str] = None, config=None, save_model: Optional[str | os.PathLike] = None,
                 region: Optional[Sequence[float]] = None, channel: Optional[int] = None, threshold=None,
                 min_distance: Optional[int] = None, min_size: Optional[int] = None, mpp: Optional[float] = None,
                 device: str = "auto", tissue_only: Optional[bool] = None, on_progress: ProgressFn = None,
                 cancel: Optional[CancelFlag] = None) -> dict:
    """Self-supervised nuclei instances of ``image`` written to ``out`` (tiled OME-TIFF, uint16
    or uint32 ids): trains a segmenter on the image (or ``region``) unless a saved ``model`` is
    given. ``method``: ``"selftrain"`` (the default: a small U-Net trained from the hematoxylin
    prior, ``config`` a SelfTrainConfig) or ``"contrastive"`` (the paper's patch-contrastive
    segmenter, ``config`` a ContrastiveConfig); None = the saved model's kind, else the config's
    type, else selftrain. ``min_distance`` (px between the centres of split nuclei) and
    ``min_size`` (px): None = the method's defaults; ``channel`` and a ``threshold`` of "auto"
    are the contrastive segmenter's only. Labels stream through a zarr store on disk for whole
    slides, and then also go to a labels pyramid for viewing next to ``out``
    (``<name>.pyramid.zarr``, :mod:`~napari_histoai.io.label_pyramid`). Returns {image, out,
    method, n, mpp, mpp_source, notes, trained, seconds, pyramid (its path or None), ...}."""
    method = segment_method(method, model, config)
    if method == "selftrain":
        return _segment_selftrain(image, out, model=model, config=config, save_model=save_model, region=region,
                                  channel=channel, threshold=threshold, min_distance=min_distance,
                                  min_size=min_size, mpp=mpp, device=device, tissue_only=tissue_only,
                                  on_progress=on_progress, cancel=cancel)
    min_distance = 5 if min_distance is None else min_distance
    min_size = 20 if min_size is None else min_size
    from .engine.devices import pick_device
    from .io import open_image
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
    summary: dict = {"image": str(image), "out": str(out), "method": "contrastive", "trained": model is None}
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
        pyramid = _write_labels(out, labels)
    summary.update(n=labels.n_objects, mpp=labels.mpp, mpp_source=labels.mpp_source, mpp_text=labels.mpp_text,
                   pyramid=None if pyramid is None else str(pyramid),
                   notes=list(labels.notes), shape=list(labels.labels.shape), tiles=labels.n_tiles,
                   seconds=round(time.perf_counter() - t0, 2))
    return summary


SEGMENT_METHODS = ("selftrain", "contrastive")


def segment_method(method: Optional[str] = None, model=None, config=None) -> str:
    """The segmenter ``segment_file`` runs: a saved ``model``'s kind decides (a name, a folder,
    or a loaded model), else ``config``'s type, else ``method`` (default ``"selftrain"``). An
    explicit ``method`` that contradicts the model or config, an unknown method, and a model
    that is no nuclei segmenter raise a one-line ``JobError``."""
    from .methods.contrastive import KIND as CONTRASTIVE_KIND
    from .methods.contrastive import ContrastiveConfig, SegmenterModel
    from .methods.selftrain import KIND as SELFTRAIN_KIND
    from .methods.selftrain import SelfTrainConfig, SelfTrainedSegmenter
    from .models import read_config, resolve_model

    if method is not None and method not in SEGMENT_METHODS:
        raise JobError(f"unknown segmentation method {method!r}; choose one of {', '.join(SEGMENT_METHODS)}")
    found, what = None, None
    if isinstance(model, (SelfTrainedSegmenter, SegmenterModel)):
        found = "selftrain" if isinstance(model, SelfTrainedSegmenter) else "contrastive"
        what = f"the model {getattr(model, 'name', '')}".rstrip()
    elif model:
        kind = read_config(resolve_model(model))["kind"]
        kinds = {SELFTRAIN_KIND: "selftrain", CONTRASTIVE_KIND: "contrastive"}
        if kind not in kinds:
            raise JobError(f"{Path(str(model)).name} is a {kind!r} model, not a nuclei segmenter "
                           f"({SELFTRAIN_KIND!r} or {CONTRASTIVE_KIND!r})")
        found, what = kinds[kind], f"{Path(str(model)).name} (a {kind!r} model)"
    elif isinstance(config, (SelfTrainConfig, ContrastiveConfig)):
        found = "selftrain" if isinstance(config, SelfTrainConfig) else "contrastive"
        what = f"a {type(config).__name__}"
    elif config is not None:
        raise JobError(f"config must be a SelfTrainConfig or a ContrastiveConfig, got {type(config).__name__}")
    if found is not None and method is not None and method != found:
        raise JobError(f"method {method!r} cannot run {what}; it needs method {found!r}")
    return found or method or "selftrain"


def _selftrain_overrides(cfg, *, threshold=None, min_distance=None, min_size=None, image_mpp=None):
    """``cfg`` with the user's threshold (probability) and minimum distance / size (level-0 px,
    converted to µm at ``image_mpp``) in place of its own."""
    from dataclasses import replace

    if isinstance(threshold, str):
        raise JobError(f"threshold {threshold!r} is for the contrastive segmenter; the self-trained one takes a "
                       "probability in (0, 1)")
    kw = {}
    if threshold is not None:
        kw["threshold"] = float(threshold)
    if min_distance is not None:
        kw["min_distance_um"] = float(min_distance) * image_mpp
    if min_size is not None:
        kw["min_size_um2"] = float(min_size) * image_mpp ** 2
    return replace(cfg, **kw).validate()


def _selftrain_job(slide, cfg, region, mpp: float, device, cancel):
    """Job: a SelfTrainedSegmenter trained on ``slide`` (an open SlideImage, read at ``mpp``
    µm/px without changing the slide's own pixel size) or its ``region``."""
    from .methods.selftrain import SelfTrainedSegmenter, train_selftrain_job
    from .methods.selftrain.job import working_images

    yield Progress(0, cfg.steps, "reading the image")
    images = working_images(slide, region, cfg, mpp)
    net = yield from train_selftrain_job(images, cfg, device=device, cancel=cancel)
    return SelfTrainedSegmenter(net, cfg, device=device)


def _segment_selftrain(image, out, *, model, config, save_model, region, channel, threshold, min_distance,
                       min_size, mpp, device, tissue_only, on_progress, cancel) -> dict:
    """``segment_file`` with the self-trained U-Net (methods.selftrain): train on the image (or
    ``region``) from the hematoxylin prior, or apply a saved ``model``; then the engine's tiled
    inference. An image without a pixel size is taken to be at the method's 0.5 µm/px (the
    engine says so in the notes)."""
    from .engine.devices import pick_device
    from .engine.inference import infer
    from .io import open_image
    from .methods.selftrain import (
        SelfTrainConfig,
        SelfTrainedSegmenter,
        load_selftrained,
        save_selftrained,
    )

    if channel is not None:
        raise JobError("a nuclei channel is chosen by the contrastive segmenter only (method 'contrastive')")
    out = check_output(out, LABELS_SUFFIXES, [image])
    if save_model is not None:
        check_folder_output(save_model, "--save-model")
    t0 = time.perf_counter()
    dev = pick_device(device)
    summary: dict = {"image": str(image), "out": str(out), "method": "selftrain", "trained": not model}
    with output_lock(out), open_image(image) as img:
        img.require_rgb8("histoai segment")
        if model:
            seg = model if isinstance(model, SelfTrainedSegmenter) else load_selftrained(model, device=dev)
            image_mpp = mpp or img.mpp or seg.config.mpp
            cfg = _selftrain_overrides(seg.config, threshold=threshold, min_distance=min_distance,
                                       min_size=min_size, image_mpp=image_mpp)
            seg = SelfTrainedSegmenter(seg.net, cfg, name=seg.name, device=dev)
            summary["model_used"] = seg.name
        else:
            base = config or SelfTrainConfig()
            image_mpp = mpp or img.mpp or base.mpp
            cfg = _selftrain_overrides(base, threshold=threshold, min_distance=min_distance, min_size=min_size,
                                       image_mpp=image_mpp)
            last: dict = {}

            def progress(p: Progress) -> None:
                last.update({k: v for k, v in (p.info or {}).items() if isinstance(v, float)})
                if on_progress is not None:
                    on_progress(p)

            t1 = time.perf_counter()
            seg = run_job(_selftrain_job(img, cfg, region, image_mpp, dev, cancel), progress, cancel)
            summary.update(train_seconds=round(time.perf_counter() - t1, 1), steps=cfg.steps,
                           loss=round(last["loss"], 4) if "loss" in last else None)
            if save_model:
                training = {"image": str(image), "region": None if region is None else [float(v) for v in region],
                            "image_mpp": image_mpp, "steps": cfg.steps, "seconds": summary["train_seconds"],
                            "final_loss": summary["loss"]}
                summary["model"] = str(save_selftrained(seg.net, cfg, save_model, training=training))
        labels = run_job(infer(img, seg, region, mpp=mpp, cancel=cancel,
                               tissue_only=region is None if tissue_only is None else tissue_only),
                         on_progress, cancel)
        pyramid = _write_labels(out, labels)
    summary.update(n=labels.n_objects, threshold=cfg.threshold, mpp=labels.mpp, mpp_source=labels.mpp_source,
                   pyramid=None if pyramid is None else str(pyramid),
                   mpp_text=labels.mpp_text, notes=list(labels.notes), shape=list(labels.labels.shape),
                   tiles=labels.n_tiles, tiles_skipped=labels.n_tiles_skipped,
                   seconds=round(time.perf_counter() - t0, 2))
    return summary


def heatmap_file(image: str | os.PathLike, out: str | os.PathLike, *, model: str | os.PathLike,
                 mpp: Optional[float] = None, region: Optional[Sequence[float]] = None, device: str = "auto",
                 on_progress: ProgressFn = None, cancel: Optional[CancelFlag] = None) -> dict:
    """Tumour heatmap of ``image`` with a trained heatmap ``model``, written to ``out`` (tiled
    pyramidal float32 OME-TIFF, tumour probability 0..1, pixel size = the slide's times the map's
    downsample, so it overlays the slide in µm). Returns {image, out, model, score, call,
    threshold, top_k (level-0 px boxes), mpp, heatmap_mpp, origin, tiles, notes, seconds}."""
    from .engine.devices import pick_device
    from .io import open_image
    from .io.writers import write_pyramid_ometiff
    from .methods.heatmap import heatmap_job, load_heatmap_model

    out = check_output(out, LABELS_SUFFIXES, [image])
    t0 = time.perf_counter()
    net = model if hasattr(model, "predict_maps") else load_heatmap_model(model, device=pick_device(device))
    with output_lock(out), open_image(image) as img:
        res = run_job(heatmap_job(img, net, region, mpp=mpp, cancel=cancel), on_progress, cancel)
        maps = res.maps
        try:
            plane = maps.maps[0] if isinstance(maps.maps, np.ndarray) else _lazy(maps.maps)[0]
            hmpp = None if maps.mpp is None else maps.mpp * maps.downsample
            _write_or_rescue(out, lambda p: write_pyramid_ometiff(p, plane, mpp=hmpp, compression="zlib", min_size=256))
        finally:
            if maps.store is not None:
                tmp = maps.store.parent if maps.store.parent.name.startswith("histoai-") else maps.store
                shutil.rmtree(tmp, ignore_errors=True)
    return {"image": str(image), "out": str(out), **res.summary(), "seconds": round(time.perf_counter() - t0, 2)}


def _lazy(arr):
    import dask.array as da

    return da.from_array(arr, chunks=(1, 1024, 1024))


def train_heatmap(slides, labels: str | os.PathLike, out: str | os.PathLike, *, annotations=None,
                  config=None, device: str = "auto", on_progress: ProgressFn = None,
                  cancel: Optional[CancelFlag] = None) -> dict:
    """Train a tumour-heatmap model from ``slides`` (a folder or a list), a labels CSV and an
    optional folder of GeoJSON tumour regions, and save it to the folder ``out`` (atomically, only
    when training finished). Returns {out, mode, best_round, rounds, threshold, slides, notes,
    seconds}."""
    from .methods.heatmap import HeatmapConfig, save_heatmap_model, train_heatmap_job
    from .methods.heatmap.data import training_slides

    out = check_folder_output(out, "--out")
    cfg = config or HeatmapConfig()
    items, notes = training_slides(slides, labels, annotations)
    res = run_job(train_heatmap_job(items, cfg, device=device, cancel=cancel), on_progress, cancel)
    n_ann = sum(bool(t.regions) for t in items)
    save_heatmap_model(res, out, training={"labels": str(labels), "annotations": None if annotations is None
                                           else str(annotations), "n_slides": len(items), "n_annotated": n_ann})
    return {"out": str(out), "mode": cfg.mode, "best_round": res.best_round, "rounds": res.rounds,
            "threshold": round(res.threshold, 4), "slides": len(items), "annotated": n_ann, "notes": notes,
            "seconds": round(res.seconds, 1)}


def instances_file(image: str | os.PathLike, out: str | os.PathLike, *, model=None,
                   region: Optional[Sequence[float]] = None, mpp: Optional[float] = None, device: str = "auto",
                   tissue_only: Optional[bool] = None, on_progress: ProgressFn = None,
                   cancel: Optional[CancelFlag] = None) -> dict:
    """Nuclei instances of ``image`` with a CyC-PDAM adapted segmenter (``model``: a name, a
    folder, or a loaded model; None = the bundled one), written to ``out`` (tiled OME-TIFF,
    uint16 or uint32 ids, pixel size = the label grid's). Whole images are processed tissue
    only, a ``region`` entirely. Labels stream through a zarr store on disk for whole slides (and
    then also go to a labels pyramid for viewing, ``<name>.pyramid.zarr`` next to ``out``).
    Returns {image, out, model, n, pyramid, mpp, mpp_source, mpp_text, notes, shape, tiles,
    tiles_skipped, seconds}."""
    from .engine.devices import pick_device
    from .engine.inference import infer
    from .io import open_image

    out = check_output(out, LABELS_SUFFIXES, [image])
    t0 = time.perf_counter()
    with output_lock(out), open_image(image) as img:
        img.require_rgb8("histoai instances")
        if hasattr(model, "segment_tiles"):
            seg = model
        else:
            # the package attribute, so that a batch worker's model cache is used
            from .methods import adaptation

            seg = adaptation.load_adapted_model(adaptation.BUNDLED if model is None else model,
                                                device=pick_device(device))
        labels = run_job(infer(img, seg, region, mpp=mpp, cancel=cancel,
                               tissue_only=region is None if tissue_only is None else tissue_only),
                         on_progress, cancel)
        pyramid = _write_labels(out, labels)
    return {"image": str(image), "out": str(out), "model": getattr(seg, "name", str(model)), "n": labels.n_objects,
            "pyramid": None if pyramid is None else str(pyramid),
            "mpp": labels.mpp, "mpp_source": labels.mpp_source, "mpp_text": labels.mpp_text,
            "notes": list(labels.notes), "shape": list(labels.labels.shape), "tiles": labels.n_tiles,
            "tiles_skipped": labels.n_tiles_skipped, "seconds": round(time.perf_counter() - t0, 2)}


def train_adapt(source_images: Optional[str | os.PathLike] = None, source_masks: Optional[str | os.PathLike] = None,
                target_images: Optional[str | os.PathLike] = None, out: Optional[str | os.PathLike] = None, *,
                config=None, target_mpp: Optional[float] = None, device: str = "auto",
                checkpoint_dir: Optional[str | os.PathLike] = None, on_progress: ProgressFn = None,
                cancel: Optional[CancelFlag] = None) -> dict:
    """Train a CyC-PDAM adapted segmenter from labelled fluorescence (``source_images`` +
    ``source_masks`` folders, masks named like their images; both None = the bundled CC0 set) to
    the H&E images of ``target_images`` (µm/px from the files, or ``target_mpp``), and save it to
    the folder ``out`` only when training finished (a cancelled run leaves a previous model
    there untouched). ``config``: an AdaptConfig (default the ``compact`` preset);
    ``checkpoint_dir``: where the job keeps (and resumes from) its periodic checkpoints.
    Returns {out, config, sources, source_nuclei, targets, steps, gan_steps, seconds, notes}."""
    from .methods.adaptation import (
        check_training_set,
        preset,
        read_source_folder,
        read_target_folder,
        save_adapted_model,
        train_adapt_job,
    )

    if target_images is None or out is None:
        raise JobError("give the target H&E images (a folder) and the output model folder")
    if (source_images is None) != (source_masks is None):
        raise JobError("give both the source images and the source masks folders, or neither (the bundled "
                       "fluorescence set)")
    out = check_folder_output(out, "--out")
    if checkpoint_dir is not None:
        _check_checkpoint_dir(Path(checkpoint_dir).expanduser(), out)
    cfg = (config or preset("compact")).validate()
    bundled = source_images is None
    if bundled:
        from .bundled import fluorescence_source

        source_images, source_masks = fluorescence_source()
    sources = read_source_folder(source_images, source_masks)
    targets = read_target_folder(target_images, mpp=target_mpp)
    check_training_set(sources, targets)
    n_nuclei = int(sum(len(np.unique(s.mask[s.mask > 0])) for s in sources))
    res = run_job(train_adapt_job(sources, targets, cfg, device=device, checkpoint_dir=checkpoint_dir, cancel=cancel),
                  on_progress, cancel)
    notes = [str(n) for n in (getattr(res, "notes", None) or [])]
    if bundled:
        notes.insert(0, "source: the bundled CC0 fluorescence set (BBBC039 crops)")
    training = {"source_images": str(source_images), "source_masks": str(source_masks),
                "bundled_source": bundled, "target_images": str(target_images), "target_mpp": target_mpp,
                "n_sources": len(sources), "n_source_nuclei": n_nuclei, "n_targets": len(targets),
                "seconds": round(float(res.seconds), 1), "notes": notes}
    saved = save_adapted_model(res.net, res.config, out, training=training, metrics=_last_losses(res.history))
    return {"out": str(saved), "config": res.config.preset, "sources": len(sources), "source_nuclei": n_nuclei,
            "targets": len(targets), "steps": res.config.steps, "gan_steps": res.config.gan_steps,
            "seconds": round(float(res.seconds), 1), "notes": notes}


def _check_checkpoint_dir(folder: Path, out: Path) -> None:
    """A folder for training checkpoints (``--resume``): a folder, or a place one can be made,
    writable, and not the model folder itself (saving the model replaces that folder)."""
    if folder.exists() and not folder.is_dir():
        raise JobError(f"--resume {folder} is a file; give a folder for the training checkpoints")
    if folder.resolve() == out.resolve():
        raise JobError("--resume must be another folder than --out (the model folder is replaced when it is saved)")
    anc = folder
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        raise JobError(f"--resume {folder}: the folder {anc} is not writable")


def _last_losses(history) -> dict:
    """{"final_losses": {stage: {loss: value}}}: the last logged losses of each training stage (a
    history of {stage, step, **losses} dicts), for the model card; {} when there are none."""
    last: dict = {}
    for h in history or []:
        if not isinstance(h, dict):
            continue
        stage = str(h.get("stage", "training"))
        for k, v in h.items():
            if k not in ("stage", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                last.setdefault(stage, {})[str(k)] = round(float(v), 5)
        if "step" in h:
            last.setdefault(stage, {})["step"] = int(h["step"])
    return {"final_losses": last} if last else {}


def _write_labels(out: Path, labels) -> Optional[Path]:
    """Write a LabelsResult as OME-TIFF (atomic, see :func:`_write_or_rescue`) at its µm/px, then
    remove its temporary zarr store (whole-slide runs). Whole-slide labels (streamed, longest side
    over ``io.label_pyramid.PYRAMID_MIN_SIDE``) also get a labels pyramid for viewing next to
    ``out`` (``<name>.pyramid.zarr``, read from the store before it goes); returns its path, or
    None. A pyramid that cannot be written is a note in ``labels.notes``: the OME-TIFF stands."""
    from .io.label_pyramid import needs_pyramid, pyramid_path_for, write_label_pyramid
    from .io.writers import write_labels_ometiff

    pyramid = None
    try:
        out_mpp = None if labels.mpp is None else labels.mpp * labels.downsample
        _write_or_rescue(out, lambda p: write_labels_ometiff(p, labels.labels, mpp=out_mpp, max_id=labels.n_objects))
        if labels.store is not None and needs_pyramid(labels.labels.shape):
            try:
                pyramid = write_label_pyramid(pyramid_path_for(out), labels.labels, mpp=out_mpp, origin=labels.origin,
                                              downsample=labels.downsample)
                labels.notes.append(f"for viewing, a labels pyramid was written to {pyramid}")
            except (OSError, JobError) as e:
                labels.notes.append(f"no labels pyramid for viewing was written ({e}); {out.name} is complete")
    finally:
        if labels.store is not None:
            tmp = labels.store.parent if labels.store.parent.name.startswith("histoai-") else labels.store
            shutil.rmtree(tmp, ignore_errors=True)
    return pyramid


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
