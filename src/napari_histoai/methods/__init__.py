"""One package per method (torch lives here; Qt and napari never do): ``detection/``
(AC-Former, its training and fine-tuning from corrections), ``contrastive/`` (self-supervised
segmentation), ``classical.py`` (the no-weights baseline), ``fusestyle.py``, ``stain.py`` and
``mixed_supervision.py`` (the paper's E-step rules)."""
