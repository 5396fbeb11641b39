"""Patch-contrastive self-supervised nuclei segmentation (Boserup & Selvan 2023).

A tiny dilated FCNN (``network``) outputs K confidence maps; an entropy-based sampler
(``sampler``) draws positive/negative patches of the attended image, which are contrasted with
MSE / cross-entropy / featurised-cosine similarities (``similarity``) by intra- and
inter-channel InfoNCE losses (``loss``). ``train`` runs restarts with model selection,
``postprocess`` turns a confidence map into nuclei instances, ``predict`` tiles inference and
``job`` holds the user-level jobs (train, segment, save/load).
"""

from .job import (
           SegmenterModel,
           load_model,
           save_model,
           segment_job,
           train_segmenter_job,
)
from .train import KIND, ContrastiveConfig, TrainResult, train_job

__all__ = ["ContrastiveConfig", "TrainResult", "SegmenterModel", "train_job", "train_segmenter_job",
           "segment_job", "save_model", "load_model", "KIND"]
