"""CyC-PDAM (Liu et al., CVPR 2020; METHODS.md section 5): nuclei instance segmentation of H&E
learned from labelled fluorescence, adapted at the pixel level (CycleGAN + nuclei inpainting)
and the feature level (image-, semantic- and instance-level discriminators, task
re-weighting) on a GroupNorm Mask R-CNN."""

from .config import ABLATION, PRESETS, AdaptConfig, preset
from .model import BUNDLED, KIND, AdaptedSegmenter, load_adapted_model, save_adapted_model
from .sources import (
    SourceImage,
    TargetImage,
    check_source,
    check_target,
    check_training_set,
    read_source_folder,
    read_target_folder,
)
from .train import AdaptTrainResult, train_adapt_job

__all__ = ["ABLATION", "PRESETS", "AdaptConfig", "preset", "BUNDLED", "KIND", "AdaptedSegmenter",
           "load_adapted_model", "save_adapted_model", "SourceImage", "TargetImage", "check_source",
           "check_target", "check_training_set", "read_source_folder", "read_target_folder",
           "AdaptTrainResult", "train_adapt_job"]
