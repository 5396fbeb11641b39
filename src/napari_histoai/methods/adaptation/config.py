"""CyC-PDAM settings: two presets sharing one code path, and a switch per named component.

``compact`` (the default) trains on these CPUs within the issue's budget: a small GroupNorm
ResNet + FPN 64, a CycleGAN with a narrow ResNet generator on 128 px crops, short schedules.
``paper`` follows METHODS.md section 5 (ResNet-50-GN, FPN 256, box head 1024, 256 px crops).
Both work at ``mpp`` µm/px: source fluorescence images are rescaled so that their median
nucleus has ``nucleus_um`` (jittered by ``scale_jitter``) at that resolution (source masks give
the size; nothing is read from the target's labels).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ...errors import JobError

__all__ = ["AdaptConfig", "PRESETS", "ABLATION", "INFERENCE_ONLY"]

INFERENCE_ONLY = ("auto_threshold", "rpn_test_pre", "rpn_test_post")

_ARCH = {
    "compact": dict(backbone="small-gn", width=24, blocks=2, fpn=64, box_rep=256, mask_width=64, sem_width=64,
                    d_width=64, d_sem_width=16, anchors=(8, 16, 32, 64), rpn_pre=1000, rpn_post=500,
                    roi_batch=256, max_det=1000, nms=0.4),
    "paper": dict(backbone="resnet50-gn", width=64, blocks=3, fpn=256, box_rep=1024, mask_width=256, sem_width=128,
                  d_width=256, d_sem_width=64, anchors=(8, 16, 32, 64), rpn_pre=2000, rpn_post=1000,
                  roi_batch=512, max_det=1000, nms=0.4),
}


@dataclass
class AdaptConfig:
    preset: str = "compact"
    mpp: float = 0.5                   # µm/px the model works at
    nucleus_um: float = 7.0            # median nucleus diameter the source is rescaled to
    scale_jitter: float = 0.25         # +- relative jitter of that diameter per source image
    # pixel level
    cyclegan: bool = True              # translate inverted fluorescence to H&E (else: inverted grey)
    inpaint: bool = True               # nuclei inpainting (NI) of the synthesised images
    gan_steps: int = 1200
    gan_crop: int = 128
    gan_width: int = 24                # generator base channels
    gan_blocks: int = 6                # generator residual blocks
    gan_lr: float = 2e-4
    cycle_weight: float = 10.0
    gan_identity: float = 0.5          # identity loss weight (x cycle_weight), the original CycleGAN default
    gan_structure: float = 2.0         # brightness-correlation loss (ours; see cyclegan.CycleGAN.step)
    # feature level
    img_da: bool = True                # image-level discriminator
    ins_da: bool = True                # instance-level discriminator
    sem: bool = True                   # semantic head + semantic-level discriminator (SEM)
    tr: bool = True                    # task re-weighting (TR)
    beta: float = 2.0                  # TR clamp (paper)
    tr_floor: float = 0.5              # TR floor (the authors' code clamps to [0.5, 1.5])
    da_weight: float = 0.1             # weight of the discriminator losses
    # Mask R-CNN training
    stain_aug: float = 0.0             # HED stain jitter of the source crops (ours; 0 = off)
    zoom_aug: tuple = (1.0, 1.0)       # per-crop zoom range of the source crops (ours)
    steps: int = 1200
    crop: int = 256
    lr: float = 1e-2                   # from scratch (the paper's 2e-3 fine-tunes pretrained weights)
    warmup: int = 200
    momentum: float = 0.9
    weight_decay: float = 1e-3
    # inference
    score_threshold: float = 0.5
    auto_threshold: bool = True        # after training: pick the score threshold whose foreground matches
                                       # Otsu on hematoxylin over the target images (label-free; calibrate.py)
    rpn_test_pre: int = 3000           # RPN proposals kept per level before NMS at inference
    rpn_test_post: int = 2000          # and after NMS (a 512 px tile of dense tissue holds ~600 nuclei)
    mask_threshold: float = 0.5
    min_area: int = 10                 # px at the model's resolution
    tile_size: int = 512
    overlap: int = 64
    seed: int = 0
    arch: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.arch:
            if self.preset not in _ARCH:
                raise JobError(f"unknown config {self.preset!r} (use one of {', '.join(_ARCH)})")
            self.arch = dict(_ARCH[self.preset])

    def validate(self) -> "AdaptConfig":
        for name in ("steps", "gan_steps", "crop", "gan_crop", "tile_size"):
            if int(getattr(self, name)) < 1:
                raise JobError(f"{name} must be positive, got {getattr(self, name)}")
        if self.crop % 32 or self.gan_crop % 4:
            raise JobError("crop must be a multiple of 32 and gan_crop of 4")
        if not (self.mpp > 0 and self.nucleus_um > 0):
            raise JobError("mpp and nucleus_um must be positive")
        if not 0 < self.score_threshold < 1:
            raise JobError(f"score threshold must be in (0, 1), got {self.score_threshold}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def training_key(self) -> dict:
        """The settings a trained Mask R-CNN depends on (checkpoint identity): inference-only
        settings added later are left out so earlier checkpoints keep resuming."""
        return {k: v for k, v in asdict(self).items() if k not in INFERENCE_ONLY}

    @classmethod
    def from_dict(cls, d: dict) -> "AdaptConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


PRESETS = {
    "compact": {},
    "paper": dict(preset="paper", gan_steps=20000, gan_crop=256, gan_width=64, gan_blocks=9, gan_lr=1e-4,
                  steps=20000, warmup=500, crop=256, da_weight=1.0, lr=2e-3),
}

# the paper's ablation, one row per added component (benchmarks/bench_adapt.py)
ABLATION = {
    "Mask R-CNN on raw fluorescence": dict(cyclegan=False, inpaint=False, img_da=False, ins_da=False, sem=False, tr=False),
    "+ CycleGAN": dict(inpaint=False, img_da=False, ins_da=False, sem=False, tr=False),
    "+ inpainting": dict(img_da=False, ins_da=False, sem=False, tr=False),
    "+ image and instance discriminators": dict(sem=False, tr=False),
    "+ SEM": dict(tr=False),
    "+ TR (full)": {},
    # beyond the paper: stain jitter and zoom of the labelled source crops
    "+ stain and zoom augmentation (ours)": dict(stain_aug=0.3, zoom_aug=(0.7, 1.4)),
}


def preset(name: str = "compact", **overrides) -> AdaptConfig:
    if name not in PRESETS:
        raise JobError(f"unknown config {name!r} (use one of {', '.join(PRESETS)})")
    return AdaptConfig(**{**PRESETS[name], **overrides})
