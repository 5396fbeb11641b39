"""Self-trained nuclei segmenter (the product default of "Segment nuclei"; no labels): a small
U-Net trained on the image itself from a hematoxylin prior's confident pixels, predicting
nuclei and a per-nucleus distance map so touching nuclei split. Beyond the patch-contrastive
paper, which stays available (methods.contrastive)."""

from .config import SelfTrainConfig
from .model import KIND, SelfTrainedSegmenter, load_selftrained, save_selftrained
from .pseudo import PseudoLabels, pseudo_labels
from .train import train_selftrain_job

__all__ = ["SelfTrainConfig", "KIND", "SelfTrainedSegmenter", "load_selftrained", "save_selftrained",
           "PseudoLabels", "pseudo_labels", "train_selftrain_job"]
