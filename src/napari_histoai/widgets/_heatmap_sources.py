"""Training inputs of the 'Tumour heatmap' dock: the table of open slides (label typed in the
dock, tumour regions from a linked Shapes layer), drawn shapes -> level-0 px polygons, and the
job that gathers the slides, trains and saves the model (saved only when training finished)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
)

from ..engine.jobs import Progress
from ..errors import JobError
from ._layers import layer_mpp

UNUSED, TUMOUR, NORMAL = "not used", "tumour", "normal"
NO_SHAPES = "(none)"
OUTPUT_KEY = "histoai_heatmap_output"  # metadata flag of the layers the dock makes


def is_output(layer) -> bool:
    return bool((getattr(layer, "metadata", None) or {}).get(OUTPUT_KEY))


def model_folder(name: str) -> Path:
    """``user_models_dir()/name`` for a valid new model name (checked before any work)."""
    from ..io.outputs import check_folder_output
    from ..models import check_model_name, user_models_dir

    return check_folder_output(user_models_dir() / check_model_name(name), "the new model")


def _ellipse(v: np.ndarray, n: int = 32) -> np.ndarray:
    """A polygon of the ellipse inscribed in the (possibly rotated) box of vertices v [4, 2]."""
    c = v.mean(0)
    u, w = (v[1] - v[0]) / 2, (v[3] - v[0]) / 2
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return c + np.cos(t) * u + np.sin(t) * w


def layer_regions(shapes, image_layer) -> list[np.ndarray]:
    """Every area shape of ``shapes`` (polygons, rectangles, ellipses; lines and paths are
    skipped) as a polygon [K, 2] (y, x) in level-0 px of ``image_layer``, through world µm. napari
    puts a pixel's centre on its integer index; level-0 px polygons put its corner there: +0.5."""
    out = []
    for verts, kind in zip(shapes.data, shapes.shape_type):
        if kind in ("line", "path"):
            continue
        world = np.array([shapes.data_to_world(v) for v in np.asarray(verts)])
        yx = np.array([image_layer.world_to_data(w)[-2:] for w in world], float) + 0.5
        if kind == "ellipse" and len(yx) == 4:
            yx = _ellipse(yx)
        if len(yx) >= 3:
            out.append(yx)
    return out


class OpenSlidesTable(QTableWidget):
    """One row per open slide (Image layers, not the dock's outputs): its label for training
    (not used / tumour / normal) and the Shapes layer holding its drawn tumour regions."""

    def __init__(self, viewer):
        super().__init__(0, 3)
        self.viewer = viewer
        self._choice: dict[str, tuple[str, str]] = {}  # layer name -> (label, shapes name), kept across refreshes
        self.setHorizontalHeaderLabels(["Open slide", "Label", "Regions"])
        head = self.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2):
            head.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.verticalHeader().setVisible(False)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.setMaximumHeight(130)
        self.setToolTip("Label open slides to train on them; tumour regions drawn in a Shapes layer over a slide "
                        "are linked to it here")

    def _remember(self) -> None:
        for r in range(self.rowCount()):
            self._choice[self.item(r, 0).text()] = (self.cellWidget(r, 1).currentText(),
                                                    self.cellWidget(r, 2).currentText())

    def refresh(self, *_a) -> None:
        from napari.layers import Image, Shapes

        self._remember()
        images = [ly.name for ly in self.viewer.layers if isinstance(ly, Image) and not is_output(ly)]
        shapes = [NO_SHAPES] + [ly.name for ly in self.viewer.layers if isinstance(ly, Shapes) and not is_output(ly)]
        self.setRowCount(len(images))
        for r, name in enumerate(images):
            label, sh = self._choice.get(name, (UNUSED, NO_SHAPES))
            item = QTableWidgetItem(name)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            item.setToolTip(name)
            self.setItem(r, 0, item)
            lab = QComboBox()
            lab.addItems([UNUSED, TUMOUR, NORMAL])
            lab.setCurrentText(label)
            reg = QComboBox()
            reg.addItems(shapes)
            reg.setToolTip("the Shapes layer with this slide's drawn tumour regions")
            reg.setCurrentText(sh if sh in shapes else NO_SHAPES)
            self.setCellWidget(r, 1, lab)
            self.setCellWidget(r, 2, reg)

    def set_choice(self, layer: str, label: str, shapes: str = NO_SHAPES) -> None:
        """Label an open slide (``tumour``/``normal``/``not used``) and link its regions layer."""
        for r in range(self.rowCount()):
            if self.item(r, 0).text() == layer:
                self.cellWidget(r, 1).setCurrentText(label)
                self.cellWidget(r, 2).setCurrentText(shapes)
                return
        raise JobError(f"no open slide named {layer!r}")

    def training_slides(self) -> list:
        """TrainingSlides of the labelled rows (read from the layers here, in the GUI thread)."""
        from ..methods.heatmap.data import TrainingSlide

        out = []
        for r in range(self.rowCount()):
            name = self.item(r, 0).text()
            label, sh = self.cellWidget(r, 1).currentText(), self.cellWidget(r, 2).currentText()
            if label == UNUSED or name not in self.viewer.layers:
                continue
            layer = self.viewer.layers[name]
            md = layer.metadata or {}
            path = md.get("histoai_path")
            if not path or not Path(path).exists():
                raise JobError(f"{name!r} was not opened from a slide file; open it with File > Open to train on it")
            regions = []
            if sh != NO_SHAPES and sh in self.viewer.layers:
                regions = layer_regions(self.viewer.layers[sh], layer)
                if not regions:
                    raise JobError(f"the Shapes layer {sh!r} has no drawn region (polygon, rectangle or ellipse)")
            out.append(TrainingSlide(Path(path), 1 if label == TUMOUR else 0, regions,
                                     None if md.get("mpp") else layer_mpp(layer)))
        return out


def train_and_save_job(out: Path, config, *, folder: str = "", labels_csv: str = "", annotations: str = "",
                       extra: Optional[list] = None, device: str = "auto", training: Optional[dict] = None):
    """Job: training slides from a folder (default: the labels CSV's) + labels CSV (+ GeoJSON
    annotations) and/or ``extra`` TrainingSlides (open layers; the same file labelled in both: the
    dock's label wins and the regions add up), train, then save to ``out``. Nothing is written
    unless training finished. Returns {result, path, notes, n_slides, n_annotated}."""
    from ..methods.heatmap import save_heatmap_model, train_heatmap_job
    from ..methods.heatmap.data import training_slides

    items, notes = [], []
    if folder or labels_csv:
        if not labels_csv:
            raise JobError("give the labels CSV of the slides folder (or label open slides only)")
        folder = folder or str(Path(labels_csv).parent)  # the CSV usually sits with its slides
        yield Progress(0, 0, "reading the labels and annotations")
        items, notes = training_slides(folder, labels_csv, annotations or None)
    by_path = {Path(t.path).resolve(): t for t in items}
    for e in extra or []:
        t = by_path.get(Path(e.path).resolve())
        if t is None:
            items.append(e)
            by_path[Path(e.path).resolve()] = e
        else:
            t.label, t.regions, t.mpp = e.label, list(t.regions) + list(e.regions), e.mpp or t.mpp
    if folder and extra:  # slides of the folder labelled in the dock are used after all
        from ..batch import expand_inputs

        left = [f.name for f in expand_inputs([folder]) if f.resolve() not in by_path]
        notes = [n for n in notes if "have no label" not in n]
        if left:
            notes.insert(0, f"{len(left)} slide(s) have no label and were not used (e.g. {left[0]})")
    if len(items) < 2:
        raise JobError("training needs at least two labelled slides (a folder and labels CSV, or open slides "
                       "labelled in the table)")
    result = yield from train_heatmap_job(items, config, device=device)
    yield Progress(0, 0, f"saving the model {out.name}")  # cancelled here: nothing saved
    n_ann = sum(bool(t.regions) for t in items)
    path = save_heatmap_model(result, out, training=dict(training or {}, n_slides=len(items), n_annotated=n_ann))
    return {"result": result, "path": path, "notes": notes, "n_slides": len(items), "n_annotated": n_ann}
