"""The five methods, one package each. Torch lives here; Qt and napari never do."""
