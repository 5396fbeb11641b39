"""Slides and images in (one interface over several back ends), results out."""

from .image import SlideImage, from_array
from .open import open_image

__all__ = ["SlideImage", "from_array", "open_image"]
