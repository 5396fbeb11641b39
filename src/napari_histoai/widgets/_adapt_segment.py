"""The "Segment nuclei (instances)" part of the 'Adapt from fluorescence' dock: image, pixel size,
adapted model (bundled default first, user models, or a folder), scope (current view, a drawn
region or the whole image), Run / Cancel with progress; the result is an instance Labels layer
"<image> instances" aligned with the image in µm."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Optional

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..engine.geometry import polygons_bbox
from ..errors import JobError
from ..models import list_models
from ._adapt_jobs import OUTPUT_KEY, instances_job, is_output
from ._layers import image_source, placement, shapes_polygons, visible_region
from ._model_folder import offer_model_folder
from ._pixel_size import PixelSizeRow
from ._runner import JobPanel, notify_error

REGION_VIEW = "Current view"
REGION_SHAPES = "Drawn region (Shapes layer)"
REGION_WHOLE = "Whole image (tissue only)"


def adapt_kind() -> tuple[str, str]:
    """(model kind, bundled model name) of the adaptation method (imported when needed: the
    method brings torch along)."""
    from ..methods.adaptation import BUNDLED, KIND

    return KIND, BUNDLED


def drop_temporary_store(event) -> None:
    """A removed instances layer whose labels lived in a temporary zarr store (whole-slide
    labels streamed by the engine) takes its store with it."""
    md = getattr(event.value, "metadata", None) or {}
    store = md.get("histoai_store") if md.get(OUTPUT_KEY) else None
    if store and Path(store).parent.name.startswith("histoai-"):
        shutil.rmtree(Path(store).parent, ignore_errors=True)


class AdaptSegmentSection(QWidget):
    """``last_result`` (LabelsResult) and ``labels_layer`` are kept for scripts and tests."""

    def __init__(self, viewer, device: Callable[[], str]):
        super().__init__()
        self.viewer, self._device = viewer, device
        self.last_result = None
        self.labels_layer = None
        self._models: dict = {}
        self._picked: dict = {}  # models chosen from a folder outside the models folders
        self.image_combo = QComboBox()
        self.pixel_size = PixelSizeRow()
        self.image_combo.currentTextChanged.connect(lambda n: self.pixel_size.set_layer(self._layer(n)))
        self.model_combo = QComboBox()
        self.model_btn = QToolButton()
        self.model_btn.setText("…")
        self.model_btn.setToolTip("use an adapted model from another folder")
        self.model_btn.clicked.connect(lambda: self.use_model())
        self.region_combo = QComboBox()
        self.region_combo.addItems([REGION_VIEW, REGION_SHAPES, REGION_WHOLE])
        self.shapes_combo = QComboBox()
        self.run_btn = QPushButton("Segment nuclei")
        self.run_btn.clicked.connect(self.start)
        self.panel = JobPanel()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Pixel size", self.pixel_size)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.model_btn)
        form.addRow("Model", row)
        form.addRow("Region", self.region_combo)
        form.addRow("Shapes layer", self.shapes_combo)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        for w in (self.run_btn, self.panel, self.summary):
            lay.addWidget(w)
        self.refresh_models()
        self.refresh_layers()

    # ------------------------------------------------------------------ choices
    def refresh_models(self, select: Optional[str] = None) -> None:
        """Fill the model selector: the bundled model first, then the user's, then picked folders."""
        kind, bundled = adapt_kind()
        cur = select or self.model_combo.currentText()
        found = list_models(kind)
        order = ([bundled] if bundled in found else []) + sorted(n for n in found if n != bundled)
        self._models = {**{n: found[n] for n in order}, **self._picked}
        self.model_combo.clear()
        self.model_combo.addItems(list(self._models))
        if cur in self._models:
            self.model_combo.setCurrentText(cur)

    def use_model(self, folder: Optional[str] = None) -> Optional[str]:
        """Offer the adapted model in ``folder`` (asked for when None) and select it."""
        return offer_model_folder(self, folder, adapt_kind()[0], "Adapted model (folder)", notify_error)

    def refresh_layers(self, *_a) -> None:
        from napari.layers import Image, Shapes

        for combo, kind in ((self.image_combo, Image), (self.shapes_combo, Shapes)):
            cur = combo.currentText()
            names = [ly.name for ly in self.viewer.layers if isinstance(ly, kind) and not is_output(ly)]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)
            combo.blockSignals(False)
        self.pixel_size.set_layer(self._layer(self.image_combo.currentText()))

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _region(self, layer):
        mode = self.region_combo.currentText()
        if mode == REGION_VIEW:
            return visible_region(self.viewer, layer)
        if mode == REGION_SHAPES:
            shapes = self._layer(self.shapes_combo.currentText())
            if shapes is None:
                raise JobError("add a Shapes layer and draw the region to segment")
            y0, x0, y1, x1 = polygons_bbox(shapes_polygons(shapes, layer))
            return (y0, x0, y1 + 1, x1 + 1)
        return None

    # ------------------------------------------------------------------ run
    def start(self):
        """Start segmenting; returns the worker (None when synchronous or refused)."""
        try:
            layer = self._layer(self.image_combo.currentText())
            if layer is None:
                raise JobError("open an H&E image first (File > Open, or File > Open Sample > HistoAI)")
            model = self.model_combo.currentText()
            if model not in self._models:
                raise JobError("no adapted model yet: train one below (Adapt to my stain) or choose a folder")
            region = self._region(layer)
            job = instances_job(image_source(layer), str(self._models[model]), self._device(), region=region,
                                mpp=self.pixel_size.override(),
                                tissue_only=self.region_combo.currentText() == REGION_WHOLE)
        except JobError as e:
            notify_error(str(e))
            return None
        self.run_btn.setEnabled(False)
        self.summary.setText("")
        self._image_layer, self._model_name = layer, model
        return self.panel.run(job, on_done=self._show, on_cancel=self._reenable, on_error=lambda _m: self._reenable())

    def _reenable(self) -> None:
        self.run_btn.setEnabled(True)

    def _show(self, result) -> None:
        self._reenable()
        layer = self._image_layer
        self.last_result = result
        name = f"{layer.name} instances"
        old = self._layer(name)
        if old is not None and is_output(old):
            self.viewer.layers.remove(old)
        md = {OUTPUT_KEY: True, "histoai_store": None if result.store is None else str(result.store),
              "model": self._model_name, "mpp": result.mpp}
        self.labels_layer = self.viewer.add_labels(result.labels, name=name, metadata=md,
                                                   **placement(layer, result.origin, result.downsample))
        msg = f"{result.n_objects} nuclei from {result.n_tiles} tile(s) at {result.mpp_text} (model {self._model_name})"
        if result.n_tiles_skipped:
            msg += f"; {result.n_tiles_skipped} background tiles skipped"
        self.summary.setText(msg + "".join(f"\nNote: {n}" for n in result.notes))
        self.panel.status.setText("Done")
