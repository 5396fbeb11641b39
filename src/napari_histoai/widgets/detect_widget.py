"""'Detect nuclei' dock: pick image, model, region; run tiled detection in the background;
get a Points layer with ``class``/``score``/``source`` features, one colour per class."""

from __future__ import annotations

from typing import Optional

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..engine.devices import DEVICE_CHOICES
from ..engine.geometry import points_in_polygons, polygons_bbox
from ..errors import JobError
from ..methods.detection.job import detect_image_job
from ..methods.detection.registry import available_detectors
from ..models import on_models_changed
from ._layers import image_source, layer_shape, points_layer_kwargs, shapes_polygons, visible_region
from ._pixel_size import PixelSizeRow
from ._runner import JobPanel, models_listener, notify_error

REGION_VIEW = "Current view"
REGION_SHAPES = "Drawn region (Shapes layer)"
REGION_WHOLE = "Whole image (tissue only)"
STORE_MIN_POINTS = 100_000  # whole-slide results this large go to a nuclei store and a level-of-detail view


def _then_store(job, path, shape):
    """The detection job, then (for a large whole-slide result) its points written to the nuclei
    store at ``path`` (slide ``shape`` (H, W) level-0 px) in the same worker; the result gets
    ``store_path``."""
    from ..engine.jobs import Progress
    from ..io.point_store import PointStore

    result = yield from job
    result.store_path = None
    if len(result) >= STORE_MIN_POINTS:
        yield Progress(0, 0, f"Writing {len(result):,} nuclei to {path}")
        _keep_edited(path)
        PointStore.create(path, result.points, result.class_ids, result.classes, result.scores,
                          shape=shape, mpp=result.mpp, attrs={"model": result.model, "region": list(result.region)})
        result.store_path = str(path)
    return result


def _keep_edited(path) -> None:
    """A store holding user corrections is renamed aside (``nuclei-<time>.points``), never overwritten."""
    import time
    from pathlib import Path

    from ..io.point_store import PointStore

    if PointStore.is_store(path) and PointStore(path).n_edits:
        p = Path(path)
        p.rename(p.with_name(f"{p.stem}-{time.strftime('%Y%m%d-%H%M%S')}{p.suffix}"))


class DetectWidget(QWidget):
    """Dock widget. ``last_result`` / ``last_layer`` are kept for scripts and tests."""

    _models_saved = Signal()

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.last_result = None
        self.last_layer = None
        self._polys = None

        self.image_combo = QComboBox()
        self.shapes_combo = QComboBox()
        self.model_combo = QComboBox()
        self.region_combo = QComboBox()
        self.region_combo.addItems([REGION_WHOLE, REGION_VIEW, REGION_SHAPES])
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.min_score = QDoubleSpinBox()
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setSingleStep(0.05)
        self.min_score.setValue(0.0)
        self.pixel_size = PixelSizeRow()
        self.image_combo.currentTextChanged.connect(self._image_changed)
        self.fast_check = QCheckBox("Fast (dense head only)")
        self.fast_check.setToolTip("AC-Former models that fuse a dense head's peaks with the transformer's points: "
                                   "the head's peaks alone, the transformer skipped, about 3x faster for nearly the "
                                   "same points. The bundled acformer-crc already runs this way (its selection "
                                   "split found the fused points no better); see the README's detection table")
        self.tta_check = QCheckBox("Test-time flips (about 3x slower)")
        self.tta_check.setToolTip("AC-Former models with a dense head: the head's maps averaged over 4 mirror images "
                                  "of each tile; slightly better points and classes (+0.005 F_d, +0.01 mean F_c on "
                                  "the benchmark's colorectal tiles) for about 3x the time")
        self.replace_check = QCheckBox("Replace the previous result")
        self.replace_check.setChecked(True)
        self.detect_btn = QPushButton("Detect nuclei")
        self.detect_btn.clicked.connect(self.start)
        self.panel = JobPanel()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Pixel size", self.pixel_size)
        form.addRow("Model", self.model_combo)
        form.addRow("Region", self.region_combo)
        form.addRow("Shapes layer", self.shapes_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Min score", self.min_score)
        form.addRow("", self.fast_check)
        form.addRow("", self.tta_check)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.replace_check)
        lay.addWidget(self.detect_btn)
        lay.addWidget(self.panel)
        lay.addWidget(self.summary)
        lay.addStretch(1)

        self.refresh_models()
        self.refresh_layers()
        # a model saved anywhere (e.g. by the training dock, from its worker thread) shows up in
        # the selector: the signal is queued to the GUI thread; a closed dock drops its listener
        self._models_saved.connect(self.refresh_models)
        on_models_changed(models_listener(self, "Detect"))
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self.refresh_layers)

    # ------------------------------------------------------------------ choices
    def refresh_models(self, select: Optional[str] = None) -> None:
        """Fill the model selector (bundled default first, user models, classical)."""
        current = select or self.model_combo.currentText()
        self.model_combo.clear()
        names = available_detectors()
        self.model_combo.addItems(names)
        if current in names:
            self.model_combo.setCurrentText(current)

    def refresh_layers(self, *_args) -> None:
        from napari.layers import Image, Shapes

        for combo, kind in ((self.image_combo, Image), (self.shapes_combo, Shapes)):
            cur = combo.currentText()
            combo.clear()
            names = [ly.name for ly in self.viewer.layers if isinstance(ly, kind)]
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)

    def _image_changed(self, *_a) -> None:
        self.pixel_size.set_layer(self._layer(self.image_combo.currentText()))

    def _layer(self, name: str):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # ------------------------------------------------------------------ run
    def start(self):
        """Start detection; returns the napari worker (None when synchronous or refused)."""
        try:
            layer = self._layer(self.image_combo.currentText())
            if layer is None:
                raise JobError("open an image first (File > Open, or File > Open Sample > HistoAI)")
            image = image_source(layer)  # opened in the worker, not here
            region, self._polys = None, None
            mode = self.region_combo.currentText()
            if mode == REGION_VIEW:
                region = visible_region(self.viewer, layer)
            elif mode == REGION_SHAPES:
                shapes = self._layer(self.shapes_combo.currentText())
                if shapes is None:
                    raise JobError("add a Shapes layer and draw the region to analyse")
                self._polys = shapes_polygons(shapes, layer)
                y0, x0, y1, x1 = polygons_bbox(self._polys)
                region = (y0, x0, y1 + 1, x1 + 1)
            job = detect_image_job(
                image, model=self.model_combo.currentText() or None, device=self.device_combo.currentText(),
                region=region, tissue_only=(mode == REGION_WHOLE), min_score=self.min_score.value(),
                mpp=self.pixel_size.override(), fast=self.fast_check.isChecked(),
                tta=self.tta_check.isChecked(),
            )
            if mode == REGION_WHOLE:
                from .wholeslide_widget import store_path_for

                job = _then_store(job, store_path_for(layer), layer_shape(layer))
        except JobError as e:
            notify_error(str(e))
            return None
        self.detect_btn.setEnabled(False)
        self.summary.setText("")
        self._image_layer = layer
        return self.panel.run(job, on_done=self._show, on_cancel=self._reenable, on_error=lambda _m: self._reenable())

    def _remove_previous(self) -> None:
        lod, self.last_lod = getattr(self, "last_lod", None), None
        if lod is not None:
            lod.close()
            for ly in lod.density_layers:
                if ly in self.viewer.layers:
                    self.viewer.layers.remove(ly)
        if self.last_layer is not None and self.last_layer in self.viewer.layers:
            self.viewer.layers.remove(self.last_layer)

    def _reenable(self) -> None:
        self.detect_btn.setEnabled(True)

    def _show(self, result) -> None:
        self._reenable()
        if self._polys is not None:
            keep = points_in_polygons(result.points, self._polys)
            result.points, result.class_ids, result.scores = result.points[keep], result.class_ids[keep], result.scores[keep]
        self.last_result = result
        name = f"nuclei ({result.model})"
        if self.replace_check.isChecked():
            self._remove_previous()
        if getattr(result, "store_path", None):  # millions of nuclei: the store, seen by level of detail
            from ..io.point_store import PointStore
            from ._lod import LodController

            self.last_lod = LodController(self.viewer, PointStore(result.store_path), self._image_layer, name=name)
            self.last_layer = self.last_lod.points_layer
        else:
            kw = points_layer_kwargs(result, self._image_layer, name=name)
            self.last_layer = self.viewer.add_points(result.points, **kw)
        counts = {c: int((result.class_ids == i).sum()) for i, c in enumerate(result.classes)}
        parts = ", ".join(f"{c}: {n}" for c, n in counts.items() if n)
        msg = f"{len(result.points)} nuclei ({parts}) from {result.n_tiles} tiles at {result.mpp_text}"
        if getattr(result, "store_path", None):
            msg += f"\nSaved to {result.store_path} (the 'Whole-slide results' dock counts and exports them)"
        if result.n_tiles_skipped:
            msg += f"; {result.n_tiles_skipped} background tiles skipped"
        for note in result.notes:
            msg += f"\nNote: {note}"
        self.summary.setText(msg)
        self.panel.status.setText("Done")
