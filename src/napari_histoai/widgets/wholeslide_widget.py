"""'Whole-slide results' dock: open the nuclei store of a slide (its correction project's
``nuclei.points``, or any ``*.points`` folder) as a level-of-detail view (see ``_lod``), show
counts and densities per class for the whole slide and for drawn regions, and export the counts
(CSV) and the nuclei (CSV / QuPath GeoJSON) from the store, not from what the viewer loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import JobError
from ._runner import JobPanel, notify_error

STORE_NAME = "nuclei.points"  # the store's folder in a correction project


def store_path_for(image_layer) -> Path:
    """Where the nuclei store of an image layer lives: in its correction project folder."""
    from .correct_widget import project_for_layer

    return project_for_layer(image_layer).root / STORE_NAME


def _table(rows) -> str:
    if not rows:
        return ""
    unit = next(k for k in rows[0] if k.startswith("nuclei_per_")).removeprefix("nuclei_per_")
    area = rows[0][f"area_{unit}"]
    lines = [f"<b>{rows[0]['region']}</b>: {area:.4g} {unit}"]
    lines += [f"{r['class']}: {r['count']:,} ({r[f'nuclei_per_{unit}']:.4g} /{unit})" for r in rows]
    return "<br>".join(lines)


class WholeSlideWidget(QWidget):
    """Dock widget. ``controller`` is the open level-of-detail view; ``rows`` the summary rows
    shown (slide, then regions)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.controller = None
        self.rows: list = []
        self.image_combo, self.shapes_combo = QComboBox(), QComboBox()
        self.open_btn = QPushButton("Open the slide's nuclei")
        self.open_btn.clicked.connect(lambda: self.open_store())
        self.browse_btn = QPushButton("Open a store…")
        self.browse_btn.clicked.connect(self._browse)
        self.region_btn = QPushButton("Count in drawn region")
        self.region_btn.clicked.connect(lambda: self.count_region())
        self.counts_btn = QPushButton("Export counts (CSV)…")
        self.counts_btn.clicked.connect(lambda: self.export_counts())
        self.export_btn = QPushButton("Export nuclei…")
        self.export_btn.clicked.connect(lambda: self.export_points())
        self.summary = QLabel("No nuclei store open")
        self.summary.setWordWrap(True)
        self.region_label = QLabel("")
        self.region_label.setWordWrap(True)
        self.panel = JobPanel()

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Region (Shapes)", self.shapes_combo)
        row = QHBoxLayout()
        row.addWidget(self.open_btn)
        row.addWidget(self.browse_btn)
        out = QHBoxLayout()
        out.addWidget(self.counts_btn)
        out.addWidget(self.export_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(row)
        lay.addWidget(self.summary)
        lay.addWidget(self.region_btn)
        lay.addWidget(self.region_label)
        lay.addLayout(out)
        lay.addWidget(self.panel)
        lay.addStretch(1)
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self.refresh_layers)
        self.refresh_layers()

    def refresh_layers(self, *_a) -> None:
        from napari.layers import Image, Shapes

        for combo, kind, pick in ((self.image_combo, Image, lambda ly: "point_store" not in ly.metadata),
                                  (self.shapes_combo, Shapes, lambda ly: True)):
            cur = combo.currentText()
            combo.clear()
            names = [ly.name for ly in self.viewer.layers if isinstance(ly, kind) and pick(ly)]
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)

    def _get(self, name: str):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    # ------------------------------------------------------------------ open
    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a nuclei store (*.points folder)")
        if path:
            self.open_store(path)

    def open_store(self, path: Optional[str] = None, image_layer=None):
        """Show the store at ``path`` (default: the chosen image's) aligned with the image;
        -> the level-of-detail controller (None when refused)."""
        from ..io.point_store import PointStore
        from ..io.point_summary import slide_summary
        from ._lod import LodController

        try:
            image_layer = image_layer or self._get(self.image_combo.currentText())
            if path is None:
                if image_layer is None:
                    raise JobError("open the slide first, or choose a store folder")
                path = store_path_for(image_layer)
                if not PointStore.is_store(path):
                    raise JobError(f"no nuclei store for {image_layer.name} yet: run 'Detect nuclei' on the whole "
                                   "slide, or open a store folder")
            store = PointStore(path)
        except JobError as e:
            notify_error(str(e))
            return None
        self.close_store()
        self.controller = LodController(self.viewer, store, image_layer)
        self.rows = slide_summary(store)
        self.summary.setText(_table(self.rows))
        return self.controller

    def close_store(self) -> None:
        if self.controller is not None:
            self.controller.close()
            self.controller = None

    @property
    def store(self):
        return None if self.controller is None else self.controller.store

    # ------------------------------------------------------------------ numbers
    def count_region(self):
        """Counts and densities in the drawn polygons (the selected shapes, else all); -> rows."""
        from ..io.point_summary import region_summary, slide_summary

        try:
            if self.controller is None:
                raise JobError("open a nuclei store first")
            shapes = self._get(self.shapes_combo.currentText())
            if shapes is None or not len(shapes.data):
                raise JobError("add a Shapes layer and draw the region to count")
            idx = sorted(shapes.selected_data) or range(len(shapes.data))
            pl = self.controller.points_layer
            polys = [[pl.world_to_data(shapes.data_to_world(v))[-2:] for v in shapes.data[i]] for i in idx]
        except JobError as e:
            notify_error(str(e))
            return None
        self.controller.flush()
        rows = region_summary(self.store, polys, name=shapes.name)
        self.rows = slide_summary(self.store) + rows
        self.region_label.setText(_table(rows))
        self.summary.setText(_table(self.rows[: len(rows)]))
        return rows

    def export_counts(self, path: Optional[str] = None) -> Optional[str]:
        from ..io.point_summary import slide_summary, write_summary_csv

        if self.controller is None:
            notify_error("open a nuclei store first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export counts", str(self.store.path.parent / "counts.csv"),
                                                  "CSV (*.csv)")
            if not path:
                return None
        self.controller.flush()
        regions = [r for r in self.rows if r["region"] != "slide"]
        return str(write_summary_csv(path, slide_summary(self.store) + regions))

    def export_points(self, path: Optional[str] = None):
        """Export every nucleus of the store (CSV or GeoJSON by extension) in a worker; -> the worker."""
        from ..engine.jobs import Progress
        from ..io.point_export import export_store

        if self.controller is None:
            notify_error("open a nuclei store first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export nuclei", str(self.store.path.parent / "nuclei.csv"),
                                                  "CSV (*.csv);;GeoJSON (*.geojson)")
            if not path:
                return None
        self.controller.flush()
        store = self.store

        def job():
            yield Progress(0, 1, f"Exporting {len(store):,} nuclei…")
            return str(export_store(store, path))

        return self.panel.run(job(), on_done=lambda p: self.panel.status.setText(f"Saved {p}"))
