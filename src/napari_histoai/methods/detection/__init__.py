"""Nuclei point detection: AC-Former (model, training, windowed inference), the detector registry and the detect job."""
