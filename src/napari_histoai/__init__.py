"""napari-histoai: nuclei detection, self-supervised segmentation and slide analysis for H&E.

The library part (``io``, ``engine``, ``methods``, ``metrics``, ``models``) never imports Qt or
napari; the dock widgets in ``widgets`` are thin front ends over the same jobs the CLI runs.
"""

__version__ = "0.1.0"
