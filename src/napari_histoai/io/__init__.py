"""Slides and images in (one interface over several back ends), results out."""

from .slide import SlideImage, open_image

__all__ = ["SlideImage", "open_image"]
