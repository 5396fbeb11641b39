"""'Evaluate' dock: compare a result layer with a ground-truth layer of the same kind (Points with
classes, or Labels) over the whole image, the current view or a drawn region; show the table,
add 'matched' / 'missed' / 'false' layers in three colours, export the table as CSV.
All numbers come from :mod:`napari_histoai.evaluation`; this file only reads layers and shows
results."""

from __future__ import annotations

from typing import Optional

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import JobError
from ..evaluation import Evaluation, PointSet, evaluate, format_value, table_to_csv
from ._layers import POINT_DIAMETER_UM, placement, shapes_polygons, visible_region
from ._pixel_size import PixelSizeRow
from ._runner import notify_error

SCOPE_WHOLE = "Whole image"
SCOPE_VIEW = "Current view"
SCOPE_SHAPES = "Drawn region (Shapes layer)"
# name -> RGBA of the three outcome layers
OUTCOMES = {"matched": (0.10, 0.80, 0.20, 1.0), "missed": (1.00, 0.60, 0.00, 1.0), "false": (0.90, 0.10, 0.10, 1.0)}
MARK = "histoai_evaluation_output"


class _Unbounded:
    """A points layer's frame for :func:`visible_region`: its transforms, no image bounds."""

    multiscale = True
    level_shapes = [(2**40, 2**40)]

    def __init__(self, layer):
        self.world_to_data = layer.world_to_data


def _points_in(layer, frame) -> np.ndarray:
    """A points layer's (y, x) in ``frame``'s data px (through world coordinates: scale and
    translate of both layers)."""
    yx = np.asarray(layer.data, dtype=np.float64)[:, -2:]
    if layer is frame:
        return yx
    world = yx * np.asarray(layer.scale[-2:]) + np.asarray(layer.translate[-2:])
    return (world - np.asarray(frame.translate[-2:])) / np.asarray(frame.scale[-2:])


def _classes(layer) -> Optional[list]:
    feats = getattr(layer, "features", None)
    if feats is None or "class" not in feats.columns or len(feats) != len(layer.data):
        return None
    return [str(c) for c in feats["class"]]


def _labels_data(layer) -> np.ndarray:
    return np.asarray(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)


class EvaluateWidget(QWidget):
    """Dock widget. ``result`` (last :class:`~napari_histoai.evaluation.Evaluation`) and
    ``out_layers`` ({"matched", "missed", "false"}: layer) are kept for scripts and tests;
    ``last_error`` is the last one-line error (None after a successful run)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.result: Optional[Evaluation] = None
        self.out_layers: dict = {}
        self.last_error: Optional[str] = None

        self.pred_combo = QComboBox()
        self.truth_combo = QComboBox()
        self.pixel_size = PixelSizeRow()
        self.truth_combo.currentTextChanged.connect(lambda name: self.pixel_size.set_layer(self._layer(name)))
        self.radius_spin = QDoubleSpinBox()
        self.radius_spin.setRange(0.1, 100.0)
        self.radius_spin.setDecimals(2)
        self.radius_spin.setSingleStep(0.5)
        self.radius_spin.setValue(3.0)
        self.radius_spin.setSuffix(" µm")
        self.radius_spin.setToolTip("pairing radius for points (3 µm in the detection papers)")
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([SCOPE_WHOLE, SCOPE_VIEW, SCOPE_SHAPES])
        self.shapes_combo = QComboBox()
        self.eval_btn = QPushButton("Evaluate")
        self.eval_btn.clicked.connect(lambda: self.run())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["metric", "value"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.export_btn = QPushButton("Export CSV…")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(lambda: self.export_csv())

        form = QFormLayout()
        form.addRow("Result layer", self.pred_combo)
        form.addRow("Ground truth", self.truth_combo)
        form.addRow("Pixel size", self.pixel_size)
        form.addRow("Radius (points)", self.radius_spin)
        form.addRow("Evaluate on", self.scope_combo)
        form.addRow("Shapes layer", self.shapes_combo)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.eval_btn)
        lay.addWidget(self.status)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.export_btn)
        self.refresh_layers()
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self.refresh_layers)

    # ------------------------------------------------------------------ layers
    def refresh_layers(self, *_args) -> None:
        from napari.layers import Labels, Points, Shapes

        def usable(ly) -> bool:
            return isinstance(ly, (Points, Labels)) and not (getattr(ly, "metadata", None) or {}).get(MARK)

        names = [ly.name for ly in self.viewer.layers if usable(ly)]
        shapes = [ly.name for ly in self.viewer.layers if isinstance(ly, Shapes)]
        for combo, items, default in ((self.pred_combo, names, 0), (self.truth_combo, names, 1),
                                      (self.shapes_combo, shapes, 0)):
            cur = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(items)
            if cur in items:
                combo.setCurrentText(cur)
            elif items:
                combo.setCurrentIndex(min(default, len(items) - 1))
            combo.blockSignals(False)
        self.pixel_size.set_layer(self._layer(self.truth_combo.currentText()))

    def _layer(self, name: str):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _region(self, truth):
        """The scope as a region in ``truth``'s data px: None, a box or polygons."""
        from napari.layers import Points

        mode = self.scope_combo.currentText()
        if mode == SCOPE_VIEW:
            return visible_region(self.viewer, _Unbounded(truth) if isinstance(truth, Points) else truth)
        if mode == SCOPE_SHAPES:
            shapes = self._layer(self.shapes_combo.currentText())
            if shapes is None:
                raise JobError("add a Shapes layer and draw the region to evaluate")
            polys = shapes_polygons(shapes, truth)
            return polys if shapes.selected_data else polys[-1:]  # the selected shapes, else the last one
        return None

    def _inputs(self, pred, truth):
        """(prediction, truth) for :func:`evaluate`: PointSets in the truth's px, or label images."""
        from napari.layers import Labels, Points

        if isinstance(pred, Points) and isinstance(truth, Points):
            return (PointSet(_points_in(pred, truth), _classes(pred)), PointSet(_points_in(truth, truth), _classes(truth)))
        if isinstance(pred, Labels) and isinstance(truth, Labels):
            if not np.allclose(pred.scale[-2:], truth.scale[-2:]):
                raise JobError(f"{pred.name!r} and {truth.name!r} have different pixel sizes; compare labels of the same image level")
            return _labels_data(pred), _labels_data(truth)
        kind = lambda ly: "Points" if isinstance(ly, Points) else "Labels"  # noqa: E731
        raise JobError(f"cannot compare a {kind(pred)} layer with a {kind(truth)} layer: choose two layers of the same kind")

    # ------------------------------------------------------------------ run
    def run(self) -> Optional[Evaluation]:
        """Evaluate now (fast: in the GUI thread); returns the result, None on bad input."""
        try:
            pred, truth = self._layer(self.pred_combo.currentText()), self._layer(self.truth_combo.currentText())
            if pred is None or truth is None:
                raise JobError("choose a result layer and a ground-truth layer (Points or Labels)")
            if pred is truth:
                raise JobError("the result and the ground truth are the same layer; choose two layers")
            p, t = self._inputs(pred, truth)
            result = evaluate(p, t, mpp=float(self.pixel_size.spin.value()), radius_um=self.radius_spin.value(),
                              region=self._region(truth))
        except JobError as e:
            self.last_error = str(e).splitlines()[0]
            self.status.setText(f"Error: {self.last_error}")
            notify_error(self.last_error)
            return None
        self.last_error = None
        self.result = result
        self._show_table(result)
        self._show_layers(result, truth)
        self.export_btn.setEnabled(True)
        counts = ", ".join(f"{k} {len(self._items(result, k))}" for k in OUTCOMES)
        self.status.setText("; ".join([f"{pred.name} vs {truth.name}: {counts}"] + result.notes))
        return result

    @staticmethod
    def _items(result: Evaluation, name: str):
        return getattr(result, name) if result.kind == "points" else getattr(result, f"{name}_ids")

    def _show_table(self, result: Evaluation) -> None:
        self.table.setRowCount(len(result.rows))
        for i, (k, v) in enumerate(result.rows):
            self.table.setItem(i, 0, QTableWidgetItem(k))
            self.table.setItem(i, 1, QTableWidgetItem(format_value(v)))
        self.table.resizeColumnToContents(0)

    def _show_layers(self, result: Evaluation, truth) -> None:
        """Replace the previous outcome layers with this run's, aligned with ``truth``."""
        for ly in self.out_layers.values():
            if ly in self.viewer.layers:
                self.viewer.layers.remove(ly)
        self.out_layers = {}
        md = {MARK: True}
        for name, rgba in OUTCOMES.items():
            data = getattr(result, name)
            if result.kind == "points":
                size = 1.3 * POINT_DIAMETER_UM / result.mpp
                ly = self.viewer.add_points(data, name=name, face_color=[rgba], border_color="black", border_width=0.05,
                                            size=size, metadata=md, **placement(truth))
            else:
                from napari.utils.colormaps import DirectLabelColormap

                cmap = DirectLabelColormap(color_dict={None: rgba, 0: (0.0, 0.0, 0.0, 0.0)})
                ly = self.viewer.add_labels(data, name=name, colormap=cmap, opacity=0.6, metadata=md,
                                            **placement(truth, result.origin))
            self.out_layers[name] = ly

    # ------------------------------------------------------------------ export
    def export_csv(self, path: Optional[str] = None):
        """Write the table as ``metric,value`` CSV (asks for a file when ``path`` is None)."""
        if self.result is None:
            notify_error("evaluate first: there is no table to export")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the table", "evaluation.csv", "CSV (*.csv)")
            if not path:
                return None
        try:
            out = table_to_csv(self.result, path)
        except OSError as e:
            notify_error(f"cannot write {path}: {e.strerror or e}")
            return None
        self.status.setText(f"table -> {out}")
        return out
