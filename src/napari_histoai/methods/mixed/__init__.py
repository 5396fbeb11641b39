"""Mixed supervision for nuclei detection (``papers/mixed_supervision_*``, METHODS.md section 4).

A user's corrections become training signal: points inside *reviewed* regions are fine labels,
the current model's predictions elsewhere are pseudo labels (patches whose best score is below
T are dropped; scores re-weighted by V, clipped to [0, 1], values < 0.01 zeroed), *no-target*
regions are hard negatives; batches mix the three at a ratio R; EM rounds re-predict the pseudo
labels with the improved model (warm start).

Modules: ``rules`` (the pseudo-label rules and the batch mix), ``data`` (rasterised regions,
held-out validation blocks, crop sampling), ``criterion`` (AC-Former's set loss with per-target
weights and ignored areas), ``train`` (the fine-tuning job), ``cli_support`` (``--project``).
"""
