"""'Tumour heatmap' dock: train a tumour-heatmap model from labelled slides (a folder + labels
CSV + GeoJSON regions, and/or open slides labelled here with regions drawn in Shapes layers),
watching the losses per EM round; then open any slide and get its heatmap, slide score and the
top-K patches behind the score (Previous / Next zoom to them). Numerics live in
``methods.heatmap``; this file wires layers to jobs (helpers: ``_heatmap_train``,
``_heatmap_sources``, ``_heatmap_results``)."""

from __future__ import annotations

from typing import Optional

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..engine.devices import DEVICE_CHOICES
from ..errors import JobError
from ..methods.heatmap.model import KIND
from ..models import list_models, on_models_changed
from ._heatmap_results import (
    drop_temporary_store,
    focus_box,
    heatmap_layer_job,
    heatmap_layer_kwargs,
    score_text,
    topk_layer_kwargs,
)
from ._heatmap_sources import is_output
from ._heatmap_train import HeatmapTrainSection
from ._layers import image_source
from ._model_folder import offer_model_folder
from ._pixel_size import PixelSizeRow
from ._runner import JobPanel, models_listener, notify_error


class HeatmapWidget(QWidget):
    """Dock widget. ``train`` is the training section (its ``summary`` is the last training);
    ``last_result`` (the last HeatmapResult), ``heatmap_layer`` and ``topk_layer`` are kept for
    scripts and tests."""

    _models_saved = Signal()

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.last_result = None
        self.heatmap_layer = self.topk_layer = None
        self._models: dict = {}
        self._picked: dict = {}  # models chosen from a folder outside the models folder
        self._box = 0

        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.train = HeatmapTrainSection(napari_viewer, self.device_combo.currentText,
                                         on_trained=lambda s: self.refresh_models(select=s["path"].name))
        self.slide_combo = QComboBox()
        self.pixel_size = PixelSizeRow()
        self.slide_combo.currentTextChanged.connect(lambda n: self.pixel_size.set_layer(self._layer(n)))
        self.model_combo = QComboBox()
        self.model_btn = QToolButton()
        self.model_btn.setText("…")
        self.model_btn.setToolTip("use a heatmap model from another folder")
        self.model_btn.clicked.connect(lambda: self.use_model())
        self.apply_btn = QPushButton("Make heatmap")
        self.apply_btn.clicked.connect(self.make_heatmap)
        self.panel = JobPanel()
        self.score_label = QLabel("")
        self.score_label.setWordWrap(True)
        self.prev_btn, self.next_btn = QPushButton("◀ Previous"), QPushButton("Next ▶")
        self.prev_btn.clicked.connect(lambda: self.step_box(-1))
        self.next_btn.clicked.connect(lambda: self.step_box(1))
        self.box_label = QLabel("")

        form = QFormLayout()
        form.addRow("Slide", self.slide_combo)
        form.addRow("Pixel size", self.pixel_size)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.model_btn)
        form.addRow("Model", model_row)
        nav = QHBoxLayout()
        nav.addWidget(self.prev_btn)
        nav.addWidget(self.next_btn)
        nav.addWidget(self.box_label, 1)
        tbox, abox = QGroupBox("Train a model"), QGroupBox("Heatmap of a slide")
        QVBoxLayout(tbox).addWidget(self.train)
        alay = QVBoxLayout(abox)
        alay.addLayout(form)
        for w in (self.apply_btn, self.panel, self.score_label):
            alay.addWidget(w)
        alay.addLayout(nav)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        dev = QFormLayout()
        dev.addRow("Device", self.device_combo)
        lay.addLayout(dev)
        lay.addWidget(tbox)
        lay.addWidget(abox)
        lay.addStretch(1)
        scroll = QScrollArea()  # the dock is tall: it scrolls rather than forcing napari's window size
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        self._scroll = scroll
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self._enable_nav()
        self.refresh_models()
        self.refresh_layers()
        # a model saved by the training job (worker thread) reaches the selector through a queued signal
        self._models_saved.connect(self.refresh_models)
        on_models_changed(models_listener(self, "Tumour heatmap"))
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(drop_temporary_store)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        """Once styled, the dock is at least as wide as its content: no sideways scrolling."""
        super().showEvent(event)
        need = self._scroll.widget().minimumSizeHint().width() + self._scroll.verticalScrollBar().sizeHint().width()
        self._scroll.setMinimumWidth(need + 6)

    # ------------------------------------------------------------------ choices
    def refresh_models(self, select: Optional[str] = None) -> None:
        """Fill the model selector with the saved tumour-heatmap models."""
        cur = select or self.model_combo.currentText()
        self._models = {**list_models(KIND), **self._picked}
        self.model_combo.clear()
        self.model_combo.addItems(list(self._models))
        if cur in self._models:
            self.model_combo.setCurrentText(cur)

    def use_model(self, folder: Optional[str] = None) -> Optional[str]:
        """Offer the heatmap model in ``folder`` (asked for when None) and select it."""
        return offer_model_folder(self, folder, KIND, "Heatmap model (folder)", notify_error)

    def refresh_layers(self, *_a) -> None:
        from napari.layers import Image

        cur = self.slide_combo.currentText()
        names = [ly.name for ly in self.viewer.layers if isinstance(ly, Image) and not is_output(ly)]
        self.slide_combo.blockSignals(True)
        self.slide_combo.clear()
        self.slide_combo.addItems(names)
        if cur in names:
            self.slide_combo.setCurrentText(cur)
        self.slide_combo.blockSignals(False)
        self.pixel_size.set_layer(self._layer(self.slide_combo.currentText()))
        self.train.table.refresh()
        self._enable_nav()

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # ------------------------------------------------------------------ heatmap
    def make_heatmap(self):
        """Make the chosen slide's heatmap; returns the worker (None when synchronous or refused)."""
        try:
            layer = self._layer(self.slide_combo.currentText())
            if layer is None:
                raise JobError("open a slide first (File > Open)")
            model = self.model_combo.currentText()
            if model not in self._models:
                raise JobError("train a heatmap model first (or choose one)")
            job = heatmap_layer_job(image_source(layer), str(self._models[model]), self.device_combo.currentText(),
                                    mpp=self.pixel_size.override())
        except JobError as e:
            notify_error(str(e))
            return None
        self.apply_btn.setEnabled(False)
        self.score_label.setText("")
        self._slide_layer, self._model_name = layer, model
        return self.panel.run(job, on_done=self._show, on_cancel=self._reenable, on_error=lambda _m: self._reenable())

    def _reenable(self) -> None:
        self.apply_btn.setEnabled(True)

    def _show(self, result) -> None:
        self._reenable()
        layer = self._slide_layer
        self.last_result = result
        for old in (self.heatmap_layer, self.topk_layer):
            if old is not None and old in self.viewer.layers:
                self.viewer.layers.remove(old)
        self.heatmap_layer = self.viewer.add_image(
            **heatmap_layer_kwargs(result, layer, f"tumour heatmap ({layer.name})"))
        self.topk_layer = None
        if result.top_k:
            self.topk_layer = self.viewer.add_shapes(**topk_layer_kwargs(result, layer, f"top patches ({layer.name})"))
            self.topk_layer.selected_data = {0}
        self._box = 0
        self._enable_nav()
        self.score_label.setText(score_text(result, self._model_name))
        self.panel.status.setText("Done")

    # ------------------------------------------------------------------ top-K boxes
    def _enable_nav(self, *_a) -> None:
        ly = self.topk_layer
        ok = ly is not None and ly in self.viewer.layers and len(ly.data) > 0
        for b in (self.prev_btn, self.next_btn):
            b.setEnabled(ok)
        if not ok:
            self.box_label.setText("")
            return
        self._box = min(self._box, len(ly.data) - 1)
        f = ly.features.iloc[self._box]
        self.box_label.setText(f"patch {self._box + 1}/{len(ly.data)}: p = {f['prob']:.2f} "
                               f"(map max {f['max_prob']:.2f})")

    def step_box(self, delta: int) -> None:
        """Select the next (``delta`` = 1) or previous (-1) top patch and zoom the camera onto it."""
        self.show_box(self._box + delta)

    def show_box(self, i: int) -> None:
        """Select top patch ``i`` (0 = the highest; wraps around) and zoom the camera onto it."""
        self._enable_nav()
        if not self.next_btn.isEnabled():
            return
        self._box = i % len(self.topk_layer.data)
        focus_box(self.viewer, self.topk_layer, self._box)
        self._enable_nav()
