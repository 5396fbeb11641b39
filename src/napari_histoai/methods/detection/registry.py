"""Detectors by name: the bundled/user AC-Former models and the classical fallback."""

from __future__ import annotations

from ...errors import JobError

CLASSICAL = "classical"
ACFORMER_KIND = "acformer-detector"
DENSEMAP_KIND = "densemap-detector"
DEFAULT_MODEL = "acformer-crc"


def available_detectors() -> list[str]:
    """Model names for the selector: trained models first (bundled default first), then the
    classical fallback."""
    from ...models import list_models

    names = list(list_models(ACFORMER_KIND)) + list(list_models(DENSEMAP_KIND))
    if DEFAULT_MODEL in names:
        names.remove(DEFAULT_MODEL)
        names.insert(0, DEFAULT_MODEL)
    return names + [CLASSICAL]


def default_detector() -> str:
    """The bundled AC-Former model when it ships, else the classical detector."""
    return available_detectors()[0]


def load_detector(name_or_path: str, device: str = "auto", fast: bool = False, tta: bool = False):
    """A ready point detector (:mod:`napari_histoai.engine.protocols`) from a name (see :func:`available_detectors`) or a
    model folder. ``fast``: an AC-Former model's dense head alone (the transformer skipped; about
    3x faster, see the README's detection table); other detectors have no fast mode. ``tta``: an
    AC-Former model's dense head averaged over 4 flips of each tile (test-time augmentation, about
    3x slower). Wrong-kind or corrupt models raise a one-line ``JobError``."""
    if fast and str(name_or_path) == CLASSICAL:
        raise JobError("fast mode is for AC-Former models with a dense head; the classical detector is fast already")
    if str(name_or_path) == CLASSICAL:
        from ..classical import ClassicalDetector

        if tta:
            raise JobError("test-time flips are for AC-Former models with a dense head, not the classical detector")
        return ClassicalDetector()
    from ...models import read_config, resolve_model

    folder = resolve_model(name_or_path)
    cfg = read_config(folder)
    if cfg["kind"] == DENSEMAP_KIND:
        from .densemap import load_densemap

        if fast:
            raise JobError(f"fast mode is for AC-Former models with a dense head; {folder.name} is a dense-map model")
        if tta:
            raise JobError(f"test-time flips are for AC-Former models with a dense head; {folder.name} is a dense-map "
                           "model")
        return load_densemap(folder, device=_device(device))
    if cfg["kind"] != ACFORMER_KIND:
        raise JobError(f"{folder.name} is a {cfg['kind']!r} model, not a nuclei detector")
    try:
        from .predict import load_acformer
    except ImportError as e:  # pragma: no cover - only while AC-Former is being built
        raise JobError(f"AC-Former support is not available: {e}") from None
    return load_acformer(folder, device=device, fast=fast, tta=tta)


def _device(device: str):
    from ...engine.devices import pick_device

    return pick_device(device) if isinstance(device, str) else device
