"""Settings of the tumour-heatmap trainer: one dataclass, two presets sharing all code.

* ``compact`` (CPU, minutes): the network works at 1 µm/px (10x) on 256 px patches (256 µm)
  overlapping by 64, trains on 128 px crops; maps come out every 4 model px (4 µm).
* ``paper`` (Li et al.; METHODS.md section 4): 512 px patches overlapping by 128 at 0.5 µm/px
  (20x), trained on 256 px crops, more steps; the same T, V, ratio, K and rounds.

``mode`` picks what the trainer learns from (the benchmark's arms):
``mixed`` (the paper: drawn regions initialise, then EM rounds with slide labels),
``pixel`` (drawn regions only, no pseudo labels: the pixel-level baseline),
``image`` (slide labels only, top-k multiple-instance learning: Campanella's baseline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ...errors import JobError

__all__ = ["HeatmapConfig", "PRESETS", "MODES", "config_from"]

MODES = ("mixed", "pixel", "image")


@dataclass
class HeatmapConfig:
    mode: str = "mixed"
    mpp: float = 1.0                # µm per model px
    patch: int = 256                # model px: E-step / stage-2 patch
    overlap: int = 64               # model px between neighbouring patches
    crop: int = 128                 # model px: M-step training crop (random, inside a patch)
    width: int = 16                 # channels of the first stage of the patch network
    stride: int = 4                 # model px per heatmap px
    tissue_min: float = 0.1         # a patch is used when this fraction of it is tissue
    # the paper's rules (METHODS.md section 4)
    T: float = 0.4
    V: float = 4.0
    zero_below: float = 0.01
    ratio: tuple = (2, 1, 7)        # fine : pseudo : hard negative per batch
    K: int = 16                     # top patches per slide for stage 2
    rounds: int = 4                 # EM rounds (the round with the lowest stage-2 loss is kept)
    init_steps: int = 300           # round 0: drawn regions only
    round_steps: int = 200          # M-step steps per round (warm start)
    batch: int = 20
    lr: float = 1e-3
    min_negatives: int = 32         # hard negatives kept even when fewer pass T (the most confident)
    negatives: str = "hard"         # hard: negative-slide patches above T (the paper); all: every one
    stage2_epochs: int = 15
    stage2_lr: float = 2e-3
    stage2_members: int = 3         # stage-2 classifiers averaged (1 = the paper's single classifier)
    mil_k: int = 2                  # image mode: patches per slide given the slide label
    fusestyle: bool = False         # FuseStyle after the first two network stages
    annotations_complete: bool = True  # drawn slides: tissue outside the regions is not tumour
    seed: int = 0

    def __post_init__(self):
        self.ratio = tuple(self.ratio)
        self.check()

    def check(self) -> None:
        from ..config_fields import NON_NEGATIVE, POSITIVE, UNIT, check_fields, one_of

        rules = {f.name: POSITIVE for f in fields(self)
                 if f.type in ("int", "float") and f.name not in ("overlap", "seed", "init_steps", "round_steps",
                                                                  "rounds", "zero_below", "tissue_min")}
        rules.update(mode=one_of(MODES), negatives=one_of(("hard", "all")), overlap=NON_NEGATIVE, seed=NON_NEGATIVE, init_steps=NON_NEGATIVE,
                     round_steps=NON_NEGATIVE, rounds=NON_NEGATIVE, zero_below=UNIT, tissue_min=UNIT, T=UNIT,
                     ratio=(lambda v: len(v) == 3 and all(isinstance(x, (int, float)) and x >= 0 for x in v)
                            and sum(v) > 0, "three numbers >= 0 (fine, pseudo, negative)"))
        check_fields(self, rules, "heatmap config")
        if self.overlap >= self.patch:
            raise JobError(f"heatmap config: overlap ({self.overlap}) must be smaller than patch ({self.patch})")
        if self.crop > self.patch or self.crop % 16 or self.patch % self.stride:
            raise JobError("heatmap config: crop must be a multiple of 16 no larger than patch, and patch a "
                           "multiple of stride")
        if self.stride not in (2, 4, 8, 16):
            raise JobError(f"heatmap config: stride must be 2, 4, 8 or 16, got {self.stride}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = list(self.ratio)
        return d


PRESETS = {
    "compact": {},
    "paper": dict(mpp=0.5, patch=512, overlap=128, crop=256, width=32, init_steps=1500, round_steps=1000,
                  batch=20),
}


def config_from(preset: str = "compact", **overrides) -> HeatmapConfig:
    """A preset (``compact`` or ``paper``) with ``overrides`` (None values ignored)."""
    if preset not in PRESETS:
        raise JobError(f"unknown heatmap config {preset!r}; choose one of {', '.join(PRESETS)}")
    kw = dict(PRESETS[preset])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(HeatmapConfig)}
    bad = sorted(set(kw) - known)
    if bad:
        raise JobError(f"unknown heatmap config field(s): {', '.join(bad)}")
    return HeatmapConfig(**kw)
