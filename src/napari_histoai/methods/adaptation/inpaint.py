"""Nuclei inpainting (NI, CyC-PDAM sec. 3.2): CycleGAN may paint nuclei where the source has
none; those "auxiliary" nuclei would be unlabelled positives. They are found and painted over:

    M_aux = (Otsu(H channel of rgb2hed(S_raw)) OR M) - M,   S = Telea-inpaint(S_raw, M_aux, r = 3)
"""

from __future__ import annotations

import numpy as np

__all__ = ["auxiliary_mask", "inpaint_nuclei"]


def auxiliary_mask(rgb: np.ndarray, mask: np.ndarray, guard: int = 1) -> np.ndarray:
    """bool [H, W]: hematoxylin-rich pixels (Otsu on the H channel) outside the labelled nuclei.
    ``guard`` px around each labelled nucleus are kept out of M_aux, so inpainting never eats a
    labelled nucleus's rim."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from ..classical import hematoxylin

    h = hematoxylin(rgb)
    if h.max() <= h.min():
        return np.zeros(mask.shape, bool)
    fg = h > threshold_otsu(h)
    labelled = mask > 0
    if guard > 0:
        labelled = ndi.binary_dilation(labelled, iterations=guard)
    return (fg | (mask > 0)) & ~labelled


def inpaint_nuclei(rgb: np.ndarray, mask: np.ndarray, radius: int = 3, guard: int = 1) -> np.ndarray:
    """RGB uint8 [H, W, 3] with the auxiliary nuclei of ``rgb`` replaced by Telea inpainting
    (OpenCV, radius ``radius`` px); labelled nuclei (``mask`` > 0) are left as they are."""
    import cv2

    aux = auxiliary_mask(rgb, mask, guard)
    if not aux.any():
        return rgb.copy()
    return cv2.inpaint(np.ascontiguousarray(rgb[..., :3]), aux.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
