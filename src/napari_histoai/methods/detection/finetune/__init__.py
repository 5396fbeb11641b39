"""Detector fine-tuning from user corrections with mixed supervision (``papers/mixed_supervision_*``,
METHODS.md section 4).

A user's corrections become training signal for an AC-Former model: points inside *reviewed*
regions are fine labels, the current model's predictions elsewhere are pseudo labels (the rules
of :mod:`napari_histoai.methods.mixed_supervision`), *no-target* regions are hard negatives;
batches mix the three at a ratio R; EM rounds re-predict the pseudo labels with the improved
model (warm start). The optimisation is the detector's own training loop
(:class:`napari_histoai.methods.detection.train.Trainer`) with per-target weights and ignored
areas in its criterion.

Modules: ``data`` (rasterised regions, held-out validation blocks, crop sampling),
``project_data`` (a correction project or a slide's corrections -> training data), ``train``
(the fine-tuning job), ``job`` (the job behind the dock and ``histoai train-detector --project``).
"""
