"""Settings of the self-trained segmenter; lengths in µm are converted at ``mpp`` µm/px."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import JobError
from ..config_fields import from_json, to_json

__all__ = ["SelfTrainConfig"]


@dataclass
class SelfTrainConfig:
    mpp: float = 0.5                  # working resolution, µm/px (images are resampled to it)
    # pseudo labels (hematoxylin prior)
    smooth_um: float = 0.5            # Gaussian smoothing of the hematoxylin channel
    stain: str = "image"              # stain vectors: "image" (the image's own, Macenko) or "ruifrok"
    #                                   (fixed, skimage rgb2hed); "image" is better on MoNuSeg's 30 tiles:
    #                                   teacher Dice median / mean / worst 0.755 / 0.752 / 0.590 vs
    #                                   0.747 / 0.747 / 0.573
    eosin_weight: float = 0.0         # nuclear signal = H - eosin_weight x E; 0.5 raised the median but
    #                                   collapsed pale tiles (worst tile 0.33), so it is off
    open_um: float = 0.5              # opening radius of the prior's mask
    ignore_low: float = 0.8           # background darker than this x Otsu is left out of the loss
    ignore_high: float = 1.1          # nucleus rims fainter than this x Otsu are left out
    rim_um: float = 1.0               # width of that rim
    # network and training
    widths: tuple = (16, 32, 64)
    steps: int = 300
    crop: int = 160
    batch: int = 4
    lr: float = 2e-3
    dist_weight: float = 2.0
    jitter: float = 0.1
    # instances
    threshold: float = 0.7            # nuclei probability; picked on every 3rd MoNuSeg train tile;
    #                                   bench_segment's "threshold 0.5" row: Dice 0.744 vs 0.755
    min_distance_um: float = 2.0      # between the centres of split nuclei
    min_size_um2: float = 4.0         # smaller objects are dropped
    tta: bool = True                  # average the 4 rotations at inference
    tile_size: int = 512
    overlap: int = 64
    seed: int = 0

    def px(self, um: float) -> float:
        return um / self.mpp

    def validate(self) -> "SelfTrainConfig":
        if not self.mpp > 0:
            raise JobError(f"mpp must be > 0, got {self.mpp}")
        for k in ("steps", "crop", "batch", "tile_size"):
            if int(getattr(self, k)) < 1:
                raise JobError(f"{k} must be positive, got {getattr(self, k)}")
        if self.crop % 4:
            raise JobError("crop must be a multiple of 4")
        if self.stain not in ("ruifrok", "image"):
            raise JobError(f"stain must be 'ruifrok' or 'image', got {self.stain!r}")
        if not 0 < self.threshold < 1:
            raise JobError(f"threshold must be in (0, 1), got {self.threshold}")
        return self

    def to_dict(self) -> dict:
        return to_json(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SelfTrainConfig":
        return from_json(cls, d)
