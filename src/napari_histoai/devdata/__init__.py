"""Seeded, reproducible development data built from the real data in ``../shared/data``.

:mod:`.tumour_mosaics` builds tumour / normal mosaic "slides" (pyramidal OME-TIFF, pixel truth,
slide labels, QuPath-style annotations) from real labelled H&E tiles, for slide heatmaps, with
:mod:`.sources` (source tiles), :mod:`.layout` (tissue / region blobs, annotations), :mod:`.paint`
(painting a slide) and :mod:`.fields` (smooth noise, upsampling). No Qt or napari imports here.
"""
