"""Jobs of the 'Adapt from fluorescence' dock (no Qt here): run an adapted (CyC-PDAM) model over
a region of an image, and gather the training images, train CyC-PDAM and save the model. The
model is written only after the last training step: a cancelled or failed run leaves any model
of the same name as it was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..engine.jobs import Progress
from ..errors import JobError

OUTPUT_KEY = "histoai_adapt_output"  # metadata flag of the layers the dock makes
TARGET_MAX_PX = 16_000_000  # an open target image larger than this is used through its visible part


def is_output(layer) -> bool:
    return bool((getattr(layer, "metadata", None) or {}).get(OUTPUT_KEY))


@dataclass
class TargetSpec:
    """An open H&E layer to adapt to: ``image`` (a path or SlideImage, opened in the worker),
    ``region`` (y0, x0, y1, x1) level-0 px or None (whole), ``mpp`` (None: unknown)."""

    name: str
    image: object
    region: Optional[tuple] = None
    mpp: Optional[float] = None


@dataclass
class SourceFolders:
    """Labelled fluorescence as two folders (images, masks named alike); ``what`` names it."""

    images: str
    masks: str
    what: str = "folder"


def instances_job(image, model: str, device: str = "auto", region=None, mpp: Optional[float] = None,
                  tissue_only: bool = False):
    """Job: load the adapted ``model`` (name or folder) and segment ``region`` of ``image``
    into instance labels; returns the engine's LabelsResult."""
    from ..engine.devices import pick_device
    from ..engine.inference import infer
    from ..methods.adaptation import load_adapted_model

    yield Progress(0, 0, f"loading the model {Path(str(model)).name}")
    seg = load_adapted_model(model, device=pick_device(device))
    return (yield from infer(image, seg, region, mpp=mpp, tissue_only=tissue_only))


def read_target(spec: TargetSpec):
    """The TargetImage of an open layer (its region, or all of it), checked."""
    from ..engine.inference import as_image, check_region
    from ..methods.adaptation import check_target

    slide, opened = as_image(spec.image, spec.mpp, spec.name)
    try:
        y0, x0, y1, x1 = check_region(spec.region, slide.shape)
        if (y1 - y0) * (x1 - x0) > TARGET_MAX_PX:
            raise JobError(f"target {spec.name}: {x1 - x0} x {y1 - y0} px is too large to adapt to; zoom in so "
                           f"that at most {TARGET_MAX_PX // 1_000_000} MP of it is in view")
        rgb = slide.read_region(y0, x0, y1, x1)
        mpp = spec.mpp or slide.mpp
    finally:
        if opened:
            slide.close()
    return check_target(rgb, spec.name, mpp)


def train_and_save_job(out: Path, config, sources: Union[SourceFolders, list], targets: Union[str, list], *,
                       device: str = "auto", training: Optional[dict] = None):
    """Job: read the source (SourceFolders, or SourceImages already checked) and target (a folder,
    or TargetSpecs / TargetImages) images, check them, train CyC-PDAM, then save the model to
    ``out``. Returns {result, path, n_sources, n_targets}."""
    from ..methods.adaptation import (
        TargetImage,
        check_training_set,
        read_source_folder,
        read_target_folder,
        save_adapted_model,
        train_adapt_job,
    )

    if isinstance(sources, SourceFolders):
        yield Progress(0, 0, f"reading the fluorescence source images ({sources.what})")
        sources = read_source_folder(sources.images, sources.masks)
    if isinstance(targets, (str, Path)):
        yield Progress(0, 0, f"reading the target H&E images of {targets}")
        targets = read_target_folder(targets)
    else:
        read = []
        for i, t in enumerate(targets):
            yield Progress(i, len(targets), f"reading the target {t.name}")
            read.append(t if isinstance(t, TargetImage) else read_target(t))
        targets = read
    check_training_set(sources, targets)
    result = yield from train_adapt_job(sources, targets, config, device=device)
    yield Progress(0, 0, f"saving the model {out.name}")  # cancelled here: nothing saved
    info = dict(training or {}, n_sources=len(sources), n_targets=len(targets),
                sources=[s.name for s in sources], targets=[t.name for t in targets])
    path = save_adapted_model(result.net, result.config, out, training=info)
    return {"result": result, "path": Path(path), "n_sources": len(sources), "n_targets": len(targets)}
