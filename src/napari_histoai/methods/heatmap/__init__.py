"""Tumour heatmaps from slide labels and a few drawn regions: mixed supervision (Li et al.).

``config`` (compact / paper presets, the mode switch: mixed, pixel-only, image-only),
``network`` (stage-1 patch segmentation net, stage-2 patch classifier), ``data`` (labelled
slides cut into tissue patches), ``em`` (the E-step rules), ``stage2`` (top-K slide classifier,
the stopping rule), ``train`` (the training job), ``model`` (the engine's dense-map protocol,
save / load), ``job`` (one slide's heatmap, score and top-K boxes).
"""

from .config import MODES, PRESETS, HeatmapConfig, config_from
from .data import TrainingSlide
from .job import HeatmapResult, heatmap_job
from .model import KIND, HeatmapModel, load_heatmap_model, save_heatmap_model
from .train import HeatmapTrainResult, train_heatmap_job

__all__ = ["MODES", "PRESETS", "HeatmapConfig", "config_from", "TrainingSlide", "HeatmapResult", "heatmap_job",
           "KIND", "HeatmapModel", "load_heatmap_model", "save_heatmap_model", "HeatmapTrainResult",
           "train_heatmap_job"]
