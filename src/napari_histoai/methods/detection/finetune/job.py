"""The one job behind the correction dock's "Train" and ``histoai train-detector --project``:
read the images' corrections, fine-tune with mixed supervision, save a named user model
(``models.user_models_dir()/<name>``, which notifies model selectors) and record it in the
project(s). Also what both front ends need around it: model names, opening projects, a
:class:`~.train.MixedConfig` from plain values."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from ....engine.inference import as_image
from ....engine.jobs import Progress
from ....errors import JobError
from ....models import check_model_name
from .train import RETUNE_STEPS, MixedConfig, mixed_train_job

__all__ = ["RETUNE_STEPS", "check_model_name", "model_output", "train_corrections_job", "Snapshot", "open_projects", "parse_ratio",
           "mixed_config"]



def model_output(name: str) -> Path:
    """``name`` -> ``user_models_dir()/name``; a path (with a folder separator) is used as is.
    Checked before any work: a model folder must be writable there."""
    from ....io.outputs import check_folder_output
    from ....models import user_models_dir

    if "/" in str(name) or "\\" in str(name):
        p = Path(name).expanduser()
        check_model_name(p.name)
    else:
        p = user_models_dir() / check_model_name(name)
    return check_folder_output(p, "the new model")


def open_projects(paths) -> list:
    """Correction projects (``<image>.histoai`` folders, or the images they belong to) ->
    :class:`~napari_histoai.project.Project` objects; JobError for one that does not exist."""
    from ....project import SUFFIX, Project

    out = []
    for p in paths:
        p = Path(p)
        if not p.name.endswith(SUFFIX) and not p.is_dir():
            p = Path(str(p) + SUFFIX)  # the image was given
        prj = Project(p)
        if not prj.exists():
            raise JobError(f"{p} is not a correction project (no points.csv / regions.geojson)")
        out.append(prj)
    return out


def parse_ratio(text: str) -> tuple:
    """The mix ratio R as text ``fine:pseudo:negative`` (``2:1:7`` or ``2,1,7``) -> three floats."""
    try:
        ratio = tuple(float(v) for v in str(text).replace(",", ":").split(":"))
    except ValueError:
        ratio = ()
    if len(ratio) != 3 or min(ratio) < 0 or sum(ratio) <= 0:
        raise JobError(f"mix ratio {text!r}: give three numbers fine:pseudo:negative, e.g. 2:1:1")
    return ratio


def mixed_config(ratio: Union[str, Sequence[float], None] = None, **values) -> MixedConfig:
    """A :class:`~.train.MixedConfig` from plain values (command-line options, form fields):
    ``None`` leaves a field at its default; ``ratio`` may be text (see :func:`parse_ratio`)."""
    if isinstance(ratio, str):
        ratio = parse_ratio(ratio)
    if ratio is not None:
        values["ratio"] = tuple(ratio)
    return MixedConfig(**{k: v for k, v in values.items() if v is not None})


class Snapshot:
    """One image's corrections as plain values (taken in the GUI thread, used in the worker):
    slide (a SlideImage, or a path the job opens), yx level-0 px, classes, sources, regions
    {kind: [polys]}, project; ``mpp``: the image's µm/px when its file has none (or to override)."""

    def __init__(self, slide, yx, classes, sources, regions: dict, project=None, name: str = "image",
                 mpp: Optional[float] = None):
        self.slide, self.yx, self.classes, self.sources = slide, yx, list(classes), list(sources)
        self.regions, self.project, self.name, self.mpp = regions, project, name, mpp


def train_corrections_job(snapshots: Sequence, start_model: str, name: str, m: Optional[MixedConfig] = None,
                          device="cpu", seed: int = 0, cancel=None, margin: int = 128, max_side: int = 3072,
                          extra_config: Optional[dict] = None, image_mpp: Optional[float] = None):
    """Fine-tune ``start_model`` on the snapshots (or :class:`~napari_histoai.project.Project`
    objects); returns the training summary (``model`` = the new model's folder). ``image_mpp``: the
    µm/px of project images whose files have none."""
    from ....engine.devices import pick_device
    from ....models import read_config, resolve_model
    from ..registry import ACFORMER_KIND
    from .project_data import mixed_image_from, mixed_image_from_project

    out = model_output(name)
    if not start_model or start_model == "classical":
        raise JobError("choose a trained AC-Former model to start from (the classical detector cannot be trained)")
    cfg = read_config(resolve_model(start_model), ACFORMER_KIND)
    classes, mpp = list(cfg.get("classes") or cfg["architecture"]["classes"]), cfg.get("mpp")
    items, projects = [], []
    for i, s in enumerate(snapshots):
        yield Progress(0, 0, f"reading corrections {i + 1}/{len(snapshots)}")
        if isinstance(s, Snapshot):
            slide, _ = as_image(s.slide)
            items.append(mixed_image_from(slide, s.yx, s.classes, s.sources, s.regions, classes, mpp,
                                          name=s.name, margin=margin, max_side=max_side, image_mpp=s.mpp))
            projects.append(s.project)
        else:  # a Project
            items.append(mixed_image_from_project(s, classes, mpp, margin=margin, max_side=max_side, image_mpp=image_mpp))
            projects.append(s)
    if len({it.name for it in items}) < len(items):
        for k, it in enumerate(items):
            it.name = f"{k}:{it.name}"
    dev = pick_device(device) if isinstance(device, str) else device
    summary = yield from mixed_train_job(start_model, items, out, m, device=dev, seed=seed, cancel=cancel, name=out.name,
                                         extra_config=extra_config)
    for p in projects:
        if p is not None:
            try:
                p.add_model(out.name, str(out), {"val": summary["val"], "val_before": summary["val_before"]})
            except OSError:
                pass  # the model is saved; a read-only project folder must not fail the job
    return summary
