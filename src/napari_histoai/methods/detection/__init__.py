"""Nuclei point detection: the detector protocol, the tiled detect job, AC-Former."""
