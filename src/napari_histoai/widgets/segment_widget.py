"""'Segment nuclei (self-supervised)' dock: no labels needed; a segmenter learns on the open image
(whole, current view or a drawn region) and makes instance Labels. Two methods:

* **Self-trained U-Net** (the default; section in ``_segment_selftrain``): trained from the
  image's hematoxylin prior, Train & segment in one click, live loss plot, save under a name;
* **Patch-contrastive** (the paper): watch its confidence maps evolve, pick the nuclei channel
  and threshold, make instance Labels; save the model or apply it to other images.

All numerics live in ``methods.selftrain`` and ``methods.contrastive``; this file only wires
layers to jobs."""

from __future__ import annotations

from typing import Optional

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..engine.devices import DEVICE_CHOICES, pick_device
from ..engine.geometry import polygons_bbox
from ..errors import JobError
from ..methods.contrastive import (
    ContrastiveConfig,
    SegmenterModel,
    load_model,
    save_model,
    segment_job,
    train_segmenter_job,
)
from ..methods.selftrain import KIND as SELFTRAIN_KIND
from ..models import on_models_changed, read_config
from ._layers import (
    image_source,
    layer_mpp,
    layer_shape,
    placement,
    shapes_polygons,
    visible_region,
)
from ._pixel_size import PixelSizeRow
from ._runner import JobPanel, models_listener, notify_error
from ._segment_labels import add_labels_result, with_label_pyramid
from ._segment_selftrain import SelfTrainSection

REGION_WHOLE = "Whole image"
REGION_VIEW = "Current view"
REGION_SHAPES = "Drawn region (Shapes layer)"
NONE = "(none)"
METHOD_SELFTRAIN = "Self-trained U-Net (default)"
METHOD_CONTRASTIVE = "Patch-contrastive (paper)"


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


def _drop_temporary_store(event) -> None:
    """A removed labels layer whose data lived in a temporary zarr store (whole-slide labels
    streamed by the engine) takes its store with it."""
    import shutil
    from pathlib import Path

    store = (getattr(event.value, "metadata", None) or {}).get("histoai_store")
    if store and Path(store).parent.name.startswith("histoai-"):
        shutil.rmtree(Path(store).parent, ignore_errors=True)


class SegmentWidget(QWidget):
    """Dock widget. ``method_combo`` picks the method; ``selftrain`` is the self-trained U-Net's
    section (its ``model``, ``last_result``, ``labels_layer``). For the contrastive method,
    ``result`` (last TrainResult), ``model`` (SegmenterModel in use), ``conf_layers`` and
    ``labels_layer`` are kept for scripts and tests; ``train`` and ``make_labels`` are its
    buttons."""

    _models_saved = Signal()

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.result = None
        self.model: Optional[SegmenterModel] = None
        self.conf_layers: list = []
        self.labels_layer = None
        self._box = None
        self._image_layer = None
        d = ContrastiveConfig()

        self.image_combo = QComboBox()
        self.pixel_size = PixelSizeRow()
        self.image_combo.currentTextChanged.connect(
            lambda name: self.pixel_size.set_layer(self._layer(name)))
        self.region_combo = QComboBox()
        self.region_combo.addItems([REGION_WHOLE, REGION_VIEW, REGION_SHAPES])
        self.shapes_combo = QComboBox()
        self.gt_combo = QComboBox()
        self.k_spin = _spin(1, 8, d.n_channels)
        self.patch_spin = _spin(10, 200, d.patch_size)
        self.patches_spin = _spin(2, 50, d.patches_per_image)
        self.sim_combo = QComboBox()
        self.sim_combo.addItems(["mse", "ce", "cosine"])
        self.steps_spin = _spin(1, 10000, d.steps)
        self.restarts_spin = _spin(1, 50, d.restarts)
        self.seed_spin = _spin(0, 2**31 - 1, d.seed)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.train_btn = QPushButton("Train on image")
        self.train_btn.clicked.connect(self.train)
        self.panel = JobPanel()
        self.channel_combo = QComboBox()
        self.channel_combo.currentIndexChanged.connect(self._show_channel)
        self.thr_slider = QSlider(Qt.Orientation.Horizontal)
        self.thr_slider.setRange(1, 99)
        self.thr_slider.setValue(50)
        self.thr_label = QLabel("0.50")
        self.auto_check = QCheckBox("auto (Otsu)")
        self.auto_check.setChecked(d.threshold == "auto")
        self.auto_check.toggled.connect(lambda on: self.thr_slider.setEnabled(not on))
        self.thr_slider.setEnabled(not self.auto_check.isChecked())
        self.thr_slider.valueChanged.connect(lambda v: self.thr_label.setText(f"{v / 100:.2f}"))
        self.labels_btn = QPushButton("Make labels")
        self.labels_btn.clicked.connect(self.make_labels)
        self.save_btn = QPushButton("Save model…")
        self.save_btn.clicked.connect(lambda: self.save_model())
        self.load_btn = QPushButton("Load model…")
        self.load_btn.clicked.connect(lambda: self.load_model())
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.method_combo = QComboBox()
        self.method_combo.addItems([METHOD_SELFTRAIN, METHOD_CONTRASTIVE])
        self.method_combo.currentIndexChanged.connect(self._method_changed)
        self.selftrain = SelfTrainSection(self.viewer, self._selftrain_inputs,
                                          lambda: pick_device(self.device_combo.currentText()), self.seed_spin.value)

        shared = QFormLayout()
        shared.addRow("Image", self.image_combo)
        shared.addRow("Pixel size", self.pixel_size)
        shared.addRow("Region", self.region_combo)
        shared.addRow("Shapes layer", self.shapes_combo)
        shared.addRow("Method", self.method_combo)
        shared.addRow("Seed", self.seed_spin)
        shared.addRow("Device", self.device_combo)
        form = QFormLayout()
        form.addRow("Ground truth (optional)", self.gt_combo)
        form.addRow("Channels K", self.k_spin)
        form.addRow("Patch size (px)", self.patch_spin)
        form.addRow("Patches per image", self.patches_spin)
        form.addRow("Similarity", self.sim_combo)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Restarts", self.restarts_spin)
        thr_row = QHBoxLayout()
        thr_row.addWidget(self.thr_slider, 1)
        thr_row.addWidget(self.thr_label)
        thr_row.addWidget(self.auto_check)
        form2 = QFormLayout()
        form2.addRow("Nuclei channel", self.channel_combo)
        form2.addRow("Threshold", thr_row)
        files = QHBoxLayout()
        files.addWidget(self.save_btn)
        files.addWidget(self.load_btn)
        self.contrastive_box = QWidget()
        clay = QVBoxLayout(self.contrastive_box)
        clay.setContentsMargins(0, 0, 0, 0)
        clay.addLayout(form)
        clay.addWidget(self.train_btn)
        clay.addWidget(self.panel)
        clay.addLayout(form2)
        clay.addWidget(self.labels_btn)
        clay.addLayout(files)
        clay.addWidget(self.summary)
        lay = QVBoxLayout(self)
        lay.addLayout(shared)
        lay.addWidget(self.selftrain)
        lay.addWidget(self.contrastive_box)
        lay.addStretch(1)
        self._method_changed()
        self._enable_model_buttons()
        self.refresh_layers()
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(_drop_temporary_store)
        # a model saved anywhere (maybe by a worker thread) reaches the selector through a queued signal
        self._models_saved.connect(lambda: self.selftrain.refresh_models())
        on_models_changed(models_listener(self, "Segment nuclei"))

    # ------------------------------------------------------------------ method
    def _method_changed(self, *_a) -> None:
        contrastive = self.method_combo.currentText() == METHOD_CONTRASTIVE
        self.contrastive_box.setVisible(contrastive)
        self.selftrain.setVisible(not contrastive)

    def _selftrain_inputs(self) -> tuple:
        """(image layer, image source, region, µm/px) for the self-trained section: the pixel
        size typed in the dock, else the image's, else the assumed one shown in the dock."""
        layer = self._layer(self.image_combo.currentText())
        if layer is None:
            raise JobError("open an H&E image first")
        mpp = self.pixel_size.override()
        if mpp is None and layer_mpp(layer) is None:
            mpp = float(self.pixel_size.spin.value())
        return layer, image_source(layer), self._region(layer), mpp

    # ------------------------------------------------------------------ layers
    def refresh_layers(self, *_args) -> None:
        from napari.layers import Image, Labels, Shapes

        def mine(ly) -> bool:  # our own outputs are not inputs
            return bool((getattr(ly, "metadata", None) or {}).get("histoai_segmenter_output"))

        for combo, kind, extra in ((self.image_combo, Image, []), (self.shapes_combo, Shapes, []),
                                   (self.gt_combo, Labels, [NONE])):
            cur = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            names = extra + [ly.name for ly in self.viewer.layers if isinstance(ly, kind) and not mine(ly)]
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)
            combo.blockSignals(False)
        self.pixel_size.set_layer(self._layer(self.image_combo.currentText()))

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def config(self) -> ContrastiveConfig:
        return ContrastiveConfig(
            n_channels=self.k_spin.value(), patch_size=self.patch_spin.value(),
            patches_per_image=self.patches_spin.value(), similarity=self.sim_combo.currentText(),
            steps=self.steps_spin.value(), restarts=self.restarts_spin.value(), seed=self.seed_spin.value(),
            threshold=self.threshold(),
        ).validate()

    def threshold(self):
        """The threshold in use: "auto" (Otsu) or the slider's value."""
        return "auto" if self.auto_check.isChecked() else self.thr_slider.value() / 100

    def _region(self, layer):
        mode = self.region_combo.currentText()
        if mode == REGION_VIEW:
            return visible_region(self.viewer, layer)
        if mode == REGION_SHAPES:
            shapes = self._layer(self.shapes_combo.currentText())
            if shapes is None:
                raise JobError("add a Shapes layer and draw the region to train on")
            y0, x0, y1, x1 = polygons_bbox(shapes_polygons(shapes, layer))
            return (y0, x0, y1 + 1, x1 + 1)
        return None

    # ------------------------------------------------------------------ train
    def train(self):
        """Start training; returns the worker (None when synchronous or refused)."""
        try:
            layer = self._layer(self.image_combo.currentText())
            if layer is None:
                raise JobError("open an H&E image first")
            image = image_source(layer)  # opened in the worker, not here
            region = self._region(layer)
            cfg = self.config()
            masks = None
            gt = self._layer(self.gt_combo.currentText()) if self.gt_combo.currentText() != NONE else None
            if gt is not None:
                y0, x0, y1, x1 = (0, 0, *layer_shape(layer)) if region is None else [int(round(v)) for v in region]
                masks = [np.asarray(gt.data)[y0:y1, x0:x1] > 0]
            device = pick_device(self.device_combo.currentText())
            job = train_segmenter_job(image, cfg, region=region, masks=masks, device=device, preview=True)
        except JobError as e:
            notify_error(str(e))
            return None
        self._image_layer = layer
        self._region_used = region
        self._mpp = self.pixel_size.override() or layer_mpp(layer)
        self.train_btn.setEnabled(False)
        self.summary.setText("")
        return self.panel.run(job, on_done=self._trained, on_progress=self._progress,
                              on_cancel=self._reenable, on_error=lambda _m: self._reenable())

    def _reenable(self) -> None:
        self.train_btn.setEnabled(True)
        self._enable_model_buttons()

    def _enable_model_buttons(self) -> None:
        for b in (self.labels_btn, self.save_btn):
            b.setEnabled(self.model is not None)

    def _progress(self, p) -> None:
        maps = p.info.get("confidence") if p.info else None
        if maps is not None:
            self._show_maps(maps, p.info.get("channel"))

    def _show_maps(self, maps: np.ndarray, channel: Optional[int] = None) -> None:
        """Create or update one Image layer per confidence channel over the preview box."""
        from ..methods.contrastive.job import preview_box

        layer = self._image_layer
        if self._box is None or len(self.conf_layers) != len(maps):
            for ly in self.conf_layers:
                if ly in self.viewer.layers:
                    self.viewer.layers.remove(ly)
            self.conf_layers = []
            self._box = preview_box(layer_shape(layer), self._region_used)
            place = placement(layer, self._box[:2])
            for k, m in enumerate(maps):
                self.conf_layers.append(self.viewer.add_image(
                    m, name=f"confidence {k}", colormap="magma", contrast_limits=(0, 1), opacity=0.6,
                    blending="additive", visible=False, metadata={"histoai_segmenter_output": True}, **place))
            self.channel_combo.blockSignals(True)
            self.channel_combo.clear()
            self.channel_combo.addItems([str(k) for k in range(len(maps))])
            self.channel_combo.blockSignals(False)
        else:
            for ly, m in zip(self.conf_layers, maps):
                ly.data = m
        if channel is not None:
            self.channel_combo.setCurrentIndex(int(channel))
        self._show_channel()

    def _show_channel(self, *_a) -> None:
        k = self.channel_combo.currentIndex()
        for i, ly in enumerate(self.conf_layers):
            if ly in self.viewer.layers:
                ly.visible = i == k
        if self.auto_check.isChecked() and 0 <= k < len(self.conf_layers):
            self.auto_threshold()

    def _trained(self, result) -> None:
        self.result = result
        self.model = SegmenterModel.from_result(result, mpp=self._mpp)
        self._box = None  # new layers with the final maps
        if result.preview_maps is not None:
            self._show_maps(result.preview_maps, result.channel)
        self._reenable()
        self.summary.setText(
            f"Trained {result.config.restarts} x {result.config.steps} steps in {result.seconds:.0f} s; kept restart "
            f"{result.restart + 1} (step {result.step}, {result.selected_by} score {result.score:.2f}). "
            f"Suggested nuclei channel: {result.channel}.")
        self.panel.status.setText("Done")

    def auto_threshold(self) -> Optional[float]:
        """Show on the slider the Otsu threshold of the shown confidence map."""
        from ..methods.contrastive.postprocess import auto_threshold

        k = self.channel_combo.currentIndex()
        if not (0 <= k < len(self.conf_layers)):
            notify_error("train a model first: the threshold is chosen on its confidence map")
            return None
        t = auto_threshold(np.asarray(self.conf_layers[k].data))
        self.thr_slider.setValue(int(round(min(0.99, max(0.01, t)) * 100)))
        return t

    # ------------------------------------------------------------------ labels
    def make_labels(self):
        """Segment the chosen image (the training region, or the same choice of region on
        another image) into a Labels layer; returns the worker (None when synchronous)."""
        try:
            if self.model is None:
                raise JobError("train or load a model first")
            layer = self._layer(self.image_combo.currentText())
            if layer is None:
                raise JobError("choose an image")
            region = self._region(layer)
            k = self.channel_combo.currentIndex()
            job = segment_job(self.model, image_source(layer), region=region,
                              channel=k if k >= 0 else None, threshold=self.threshold(),
                              mpp=self.pixel_size.override(), device=pick_device(self.device_combo.currentText()))
        except JobError as e:
            notify_error(str(e))
            return None
        self.labels_btn.setEnabled(False)
        found: dict = {}

        def done(result):
            if self.labels_layer is not None and self.labels_layer in self.viewer.layers:
                self.viewer.layers.remove(self.labels_layer)
            md = {"histoai_segmenter_output": True, "histoai_store": None if result.store is None else str(result.store)}
            self.labels_layer = add_labels_result(self.viewer, result, layer, f"nuclei labels ({layer.name})", md,
                                                  pyramid=found.get("pyramid"))
            self.summary.setText(f"{result.n_objects} nuclei at {result.mpp_text}")
            self._enable_model_buttons()

        return self.panel.run(with_label_pyramid(job, found), on_done=done, on_cancel=self._enable_model_buttons,
                              on_error=lambda _m: self._enable_model_buttons())

    # ------------------------------------------------------------------ models
    def save_model(self, folder: Optional[str] = None):
        if self.result is None:
            notify_error("train a model first")
            return None
        if folder is None:
            folder = QFileDialog.getSaveFileName(self, "Save segmenter as (folder)")[0]
            if not folder:
                return None
        self.result.channel = max(0, self.channel_combo.currentIndex())
        self.result.config.threshold = self.threshold()
        path = save_model(self.result, folder, mpp=self._mpp)
        self.summary.setText(f"model saved to {path}")
        return path

    def load_model(self, folder: Optional[str] = None):
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Load segmenter (model folder)")
            if not folder:
                return None
        try:
            kind = read_config(folder)["kind"]
        except JobError as e:
            notify_error(str(e))
            return None
        if kind == SELFTRAIN_KIND:
            # a self-trained model: offered and selected in its own section
            self.method_combo.setCurrentText(METHOD_SELFTRAIN)
            return self.selftrain.use_model(folder)
        try:
            self.model = load_model(folder)
        except JobError as e:
            notify_error(str(e))
            return None
        n = self.model.net.head.out_channels
        self.channel_combo.blockSignals(True)
        self.channel_combo.clear()
        self.channel_combo.addItems([str(k) for k in range(n)])
        self.channel_combo.setCurrentIndex(self.model.channel)
        self.channel_combo.blockSignals(False)
        if isinstance(self.model.threshold, str):
            self.auto_check.setChecked(True)
        else:
            self.auto_check.setChecked(False)
            self.thr_slider.setValue(int(round(self.model.threshold * 100)))
        self._enable_model_buttons()
        self.save_btn.setEnabled(self.result is not None)
        self.summary.setText(f"loaded {folder}: channel {self.model.channel}, threshold {self.model.threshold}")
        return self.model
