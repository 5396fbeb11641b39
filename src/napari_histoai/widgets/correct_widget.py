"""'Correct nuclei and train' dock: correct a Points layer (class palette with hotkeys 1..K,
napari's add / delete / move tools), mark reviewed and no-target regions (two Shapes layers the
dock manages), autosave everything to the image's project folder (debounced ~1 s, atomic), and
fine-tune the detector on the corrections with mixed supervision (see ``_train_section``).

Layers' data coordinates are the image's level-0 pixels (the dock creates them with the image
layer's scale and translate; the Detect dock's points layers are aligned the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import JobError
from ..io.point_store import SOURCES as STORE_SOURCES
from ..io.point_store import Points as StorePoints
from ..project import NO_TARGET, REVIEWED, Project, project_dir_for
from ._palette import ClassPalette
from ._pixel_size import PixelSizeRow
from ._runner import notify_error
from ._train_section import TrainSection

POINTS_NAME = "nuclei (corrections)"
REGION_LAYERS = {REVIEWED: "reviewed regions", NO_TARGET: "no-target regions"}
REGION_STYLE = {REVIEWED: ("#28c850", "#28c85026"), NO_TARGET: ("#b0b0b0", "#60606040")}
NEW_LAYER = "<new points layer>"
SAVE_DELAY_MS = 1000


def project_for_layer(image_layer) -> Project:
    """The project of an image layer: ``<file>.histoai`` next to its file, else a folder under
    ``~/.napari-histoai/projects/<layer name>`` (images without a file)."""
    import os

    from ..models import user_models_dir

    path = (getattr(image_layer, "metadata", {}) or {}).get("histoai_path")
    if path:
        p = Project.for_image(path)
        if p.root.is_dir() or os.access(p.root.parent, os.W_OK):
            return p
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in (Path(path).name if path else image_layer.name))
    return Project(user_models_dir().parent / "projects" / (safe + ".histoai"), path)


def _weak_models_listener(widget):
    """A ``models.on_models_changed`` callback that holds the dock weakly and raises once the
    dock (or its Qt object) is gone, so ``models`` drops it instead of touching a dead widget."""
    import weakref

    ref = weakref.ref(widget)

    def cb():
        w = ref()
        if w is None:
            raise RuntimeError("dock closed")
        w.objectName()  # RuntimeError if the Qt object was deleted
        w.models_changed.emit()

    return cb


def _set_defaults(layer, name: str) -> None:
    """New points get class ``name``, score 1 and source user; other feature columns (a whole-slide
    view's ``store_id``) keep their defaults (napari wants a default for every column)."""
    d = {k: v[0] for k, v in layer.feature_defaults.to_dict("list").items() if v}
    layer.feature_defaults = {**d, "class": name, "score": 1.0, "source": "user"}


class CorrectWidget(QWidget):
    models_changed = Signal()  # emitted from any thread; delivered in the GUI thread (queued)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.project: Optional[Project] = None
        self.image_layer = self.points_layer = None
        self.region_layers: dict = {}
        self.image_combo, self.points_combo = QComboBox(), QComboBox()
        self.pixel_size = PixelSizeRow()
        self.image_combo.currentTextChanged.connect(lambda name: self.pixel_size.set_layer(self._get(name)))
        self.attach_btn = QPushButton("Correct these points")
        self.attach_btn.clicked.connect(lambda: self.attach())
        self.palette = ClassPalette()
        self.palette.chosen.connect(self.set_class)
        self.reviewed_btn = QPushButton("Draw reviewed region")
        self.no_target_btn = QPushButton("Draw no-target region")
        self.reviewed_btn.clicked.connect(lambda: self.draw_region(REVIEWED))
        self.no_target_btn.clicked.connect(lambda: self.draw_region(NO_TARGET))
        self.project_label = QLabel("No project yet")
        self.project_label.setWordWrap(True)
        self.restore_btn = QPushButton("Restore from project")
        self.restore_btn.clicked.connect(lambda: self.attach(restore=True))
        self.export_btn = QPushButton("Export points…")
        self.export_btn.clicked.connect(lambda: self.export_points())
        self.save_timer = QTimer(self)
        self.save_timer.setSingleShot(True)
        self.save_timer.setInterval(SAVE_DELAY_MS)
        self.save_timer.timeout.connect(self.save_now)
        self.train = TrainSection(self.snapshots, self._trained)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Pixel size", self.pixel_size)
        form.addRow("Points", self.points_combo)
        regions = QHBoxLayout()
        regions.addWidget(self.reviewed_btn)
        regions.addWidget(self.no_target_btn)
        files = QHBoxLayout()
        files.addWidget(self.restore_btn)
        files.addWidget(self.export_btn)
        box = QGroupBox("Train the detector on the corrections")
        QVBoxLayout(box).addWidget(self.train)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.attach_btn)
        lay.addWidget(self.palette)
        lay.addLayout(regions)
        lay.addWidget(self.project_label)
        lay.addLayout(files)
        lay.addWidget(box)
        lay.addStretch(1)

        from ..models import on_models_changed

        self.models_changed.connect(self.train.refresh_models)
        self._models_cb = _weak_models_listener(self)
        on_models_changed(self._models_cb)
        self.viewer.layers.events.inserted.connect(self._layer_inserted)
        self.viewer.layers.events.removed.connect(self._layer_removed)
        self.refresh_layers()
        for ly in list(self.viewer.layers):  # an image whose project exists: restore it now
            if self._is_image(ly) and self._has_project(ly):
                self.attach(image_layer=ly, restore=True)
                break

    # ------------------------------------------------------------------ layers
    @staticmethod
    def _is_image(ly) -> bool:
        from napari.layers import Image

        return isinstance(ly, Image) and ly.rgb

    def _has_project(self, ly) -> bool:
        return project_for_layer(ly).exists()

    def refresh_layers(self, *_a) -> None:
        from napari.layers import Points

        own = set(self.region_layers.values())
        for combo, names in ((self.image_combo, [ly.name for ly in self.viewer.layers if self._is_image(ly)]),
                             (self.points_combo, [ly.name for ly in self.viewer.layers
                                                  if isinstance(ly, Points) and ly not in own] + [NEW_LAYER])):
            cur = combo.currentText()
            combo.clear()
            combo.addItems(names)
            if cur in names:
                combo.setCurrentText(cur)

    def _layer_inserted(self, event) -> None:
        self.refresh_layers()
        ly = event.value
        if self.image_layer is None and self._is_image(ly) and self._has_project(ly):
            QTimer.singleShot(0, lambda: self.attach(image_layer=ly, restore=True))

    def _layer_removed(self, event) -> None:
        ly = event.value
        if ly is self.points_layer:
            self.save_now()
            self.points_layer = None
        for k, v in list(self.region_layers.items()):
            if v is ly:
                del self.region_layers[k]
        if ly is self.image_layer:
            self.save_now()
            self.image_layer, self.project = None, None
        self.refresh_layers()

    def _geom(self) -> dict:
        from ._layers import placement

        return placement(self.image_layer)

    def attach(self, image_layer=None, restore: bool = False):
        """Start correcting: choose the image and points layers, open the image's project
        (restoring its saved points and regions when ``restore`` or when no points layer is
        chosen), create the region layers. Returns the points layer."""
        try:
            image_layer = image_layer or self._get(self.image_combo.currentText())
            if image_layer is None:
                raise JobError("open an image first")
        except JobError as e:
            notify_error(str(e))
            return None
        if self.image_layer is not None and self.project is not None:
            self.save_now()
        try:  # a broken or torn project folder is one notification, and is left as it is
            project = project_for_layer(image_layer)
            saved = project.exists()
            chosen = self._get(self.points_combo.currentText())
            pts = regions = None
            if saved and (restore or chosen is None):
                pts, regions = project.load_points(), project.load_regions()
        except JobError as e:
            notify_error(str(e))
            return None
        self.image_layer, self.project = image_layer, project
        self.image_combo.setCurrentText(image_layer.name)
        self.pixel_size.set_layer(image_layer)
        if restore or chosen is None:
            regions = regions or {}
            layer = self._get(POINTS_NAME)
            if layer is not None and restore:
                self.viewer.layers.remove(layer)
                layer = None
            if layer is None:
                layer = self._new_points_layer(pts)
            for kind in REGION_LAYERS:
                self._region_layer(kind, regions.get(kind), replace=restore)
        else:
            layer = chosen
            for kind in REGION_LAYERS:
                self._region_layer(kind, None)
        self._adopt(layer)
        self.project_label.setText(f"Project: {self.project.root}" + (" (restored)" if saved and (restore or chosen is None) else ""))
        self.schedule_save()
        return layer

    def _get(self, name):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _classes(self) -> list:
        from ..models import read_config, resolve_model

        try:
            return list(read_config(resolve_model(self.train.model_combo.currentText()))["classes"])
        except (JobError, KeyError, OSError):
            from ..methods.detection.configs import CLASSES

            return list(CLASSES)

    def _new_points_layer(self, pts=None):
        import pandas as pd

        from ..classes import color_map
        from ._layers import POINT_DIAMETER_UM, layer_mpp

        classes = self._classes()
        yx = np.zeros((0, 2)) if pts is None else pts.yx
        if pts is not None:
            classes += [c for c in dict.fromkeys(pts.classes) if c not in classes]
        feats = pd.DataFrame({
            "class": pd.Categorical([] if pts is None else pts.classes, categories=classes),
            "score": np.zeros(0) if pts is None else np.asarray(pts.scores, float),
            "source": pd.Categorical([] if pts is None else pts.sources, categories=["model", "user"])})
        mpp = layer_mpp(self.image_layer)
        return self.viewer.add_points(
            yx, name=POINTS_NAME, features=feats, face_color="class",
            face_color_cycle={c: (*rgb, 1.0) for c, rgb in color_map(classes).items()},
            border_color="black", border_width=0.05, size=POINT_DIAMETER_UM / mpp if mpp else 12.0,
            metadata={"classes": classes, "mpp": mpp}, **self._geom())

    def _region_layer(self, kind: str, polys=None, replace: bool = False):
        name = REGION_LAYERS[kind]
        layer = self._get(name)
        if layer is not None and replace:
            self.viewer.layers.remove(layer)
            layer = None
        if layer is None:
            edge, face = REGION_STYLE[kind]
            layer = self.viewer.add_shapes([np.asarray(p) for p in (polys or [])], shape_type="polygon", name=name,
                                           edge_color=edge, face_color=face, edge_width=3, **self._geom())
            layer.current_edge_color, layer.current_face_color = edge, face
            layer.events.data.connect(self.schedule_save)
        self.region_layers[kind] = layer
        return layer

    def _adopt(self, layer) -> None:
        """Make ``layer`` the corrected points: features, palette, hotkeys, events."""
        import pandas as pd

        if self.points_layer is not None and self.points_layer is not layer:
            try:
                self.points_layer.events.data.disconnect(self._points_changed)
            except (TypeError, ValueError, RuntimeError):
                pass
        self.points_layer = layer
        f = layer.features
        classes = list(layer.metadata.get("classes") or [])
        if "class" in f and hasattr(f["class"], "cat"):
            classes += [c for c in f["class"].cat.categories if c not in classes]
        classes = classes or self._classes()
        if "class" not in f:
            f["class"] = pd.Categorical(["nucleus"] * len(f), categories=classes + ["nucleus"])
        if "score" not in f:
            f["score"] = 1.0
        if "source" not in f:
            f["source"] = pd.Categorical(["model"] * len(f), categories=["model", "user"])
        layer.features = f
        self.palette.set_classes(classes)
        _set_defaults(layer, self.palette.current)
        for i, name in enumerate(classes[:9]):
            layer.bind_key(str(i + 1), lambda _ly, n=name: self.set_class(n), overwrite=True)
        layer.events.data.connect(self._points_changed)
        self.refresh_layers()
        self.points_combo.setCurrentText(layer.name)
        self.update_counts()

    # ------------------------------------------------------------------ editing
    def _points_changed(self, event=None) -> None:
        action = str(getattr(event, "action", ""))
        if action.endswith("changed") and self.points_layer is not None:  # moved points are corrections
            idx = [i for i in (getattr(event, "data_indices", ()) or ()) if 0 <= i < len(self.points_layer.data)]
            if idx and len(idx) < len(self.points_layer.data):
                self.points_layer.features.loc[idx, "source"] = "user"
        if action.endswith(("added", "removed", "changed")) or not action:
            self.update_counts()
            self.schedule_save()

    def set_class(self, name: str) -> None:
        """Class for new points, and for the selected points (they become ``source = user``)."""
        self.palette.set_current(name)
        layer = self.points_layer
        if layer is None:
            return
        _set_defaults(layer, name)
        sel = sorted(layer.selected_data)
        if sel:
            f = layer.features
            f.loc[sel, "class"] = name
            f.loc[sel, "source"] = "user"
            f.loc[sel, "score"] = 1.0
            layer.features = f
            layer.refresh_colors(update_color_mapping=False)
            self.update_counts()
            self.schedule_save()

    def counts(self) -> dict:
        from ._lod import controller_of

        ctl = controller_of(self.points_layer)
        if ctl is not None:  # a whole-slide view: the store's counts, edits included
            ctl.flush()
            return {c: int(n) for c, n in zip(ctl.store.classes, ctl.store.class_counts())}
        if self.points_layer is None or not len(self.points_layer.data):
            return {}
        return {str(k): int(v) for k, v in self.points_layer.features["class"].value_counts().items()}

    def update_counts(self) -> None:
        self.palette.set_counts(self.counts())

    def draw_region(self, kind: str) -> None:
        if self.image_layer is None and self.attach() is None:
            return
        layer = self.region_layers.get(kind) or self._region_layer(kind)
        self.viewer.layers.selection.active = layer
        layer.mode = "add_polygon"

    # ------------------------------------------------------------------ project
    def schedule_save(self, *_a) -> None:
        """Debounced autosave: every change restarts a ~1 s timer."""
        if self.project is not None:
            self.save_timer.start()

    def regions(self) -> dict:
        """Polygons (level-0 px) per kind; a kind whose layer the user closed keeps its saved
        regions (closing a layer is not deleting the work)."""
        out = {k: [np.asarray(d)[:, -2:] for d in ly.data] for k, ly in self.region_layers.items() if ly in self.viewer.layers}
        missing = [k for k in REGION_LAYERS if k not in out]
        if missing and self.project is not None and self.project.exists():
            saved = self.project.load_regions()
            out.update({k: saved.get(k, []) for k in missing})
        return out

    def close_project(self) -> None:
        """Save, then stop following the viewer (call before discarding the dock)."""
        self.save_now()
        from ..models import remove_models_listener

        remove_models_listener(self._models_cb)
        for ev, cb in ((self.viewer.layers.events.inserted, self._layer_inserted),
                       (self.viewer.layers.events.removed, self._layer_removed)):
            ev.disconnect(cb)
        self.project = self.points_layer = self.image_layer = None

    def _points_values(self):
        from ._lod import controller_of

        ctl = controller_of(self.points_layer)
        if ctl is not None:  # a whole-slide view holds a window of the points: read them all from the store
            ctl.flush()
            pts = StorePoints.concat(list(ctl.store.iter_points()))
            names = np.array(ctl.store.classes, dtype=object)
            return (pts.yx.astype(np.float64), names[pts.cls].tolist(), pts.score.astype(np.float64),
                    np.array(STORE_SOURCES, dtype=object)[pts.source].tolist())
        ly = self.points_layer
        f = ly.features
        return (np.asarray(ly.data)[:, -2:], [str(c) for c in f["class"]], np.asarray(f["score"], float),
                [str(s) for s in f["source"]])

    def save_now(self) -> None:
        """Write points, regions and project info now (atomic files)."""
        self.save_timer.stop()
        if self.project is None or self.points_layer is None:
            return
        try:
            from ..project import ProjectPoints
            from ._lod import controller_of

            reg = self.regions()
            ctl = controller_of(self.points_layer)
            if ctl is not None:  # the store keeps the points (each edit durable): save the regions
                ctl.flush()
                self.project.save_regions(reg.get(REVIEWED, []), reg.get(NO_TARGET, []),
                                          classes=self.palette.classes, model=self.train.model_combo.currentText())
                return
            yx, cls, sc, src = self._points_values()
            self.project.save(ProjectPoints(yx, cls, sc, src), reg.get(REVIEWED, []), reg.get(NO_TARGET, []),
                              classes=self.palette.classes, model=self.train.model_combo.currentText())
        except (OSError, JobError) as e:
            notify_error(f"could not save the corrections to {self.project.root}: {e}")

    def export_points(self, path: Optional[str] = None) -> Optional[str]:
        """Export the corrected points (CSV or GeoJSON by extension) with the foundation writers."""
        from ..io.points import write_points_csv, write_points_geojson
        from ._layers import layer_mpp

        if self.points_layer is None:
            notify_error("nothing to export: start correcting first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export points", str(project_dir_for(self.image_layer.name)),
                                                  "CSV (*.csv);;GeoJSON (*.geojson)")
            if not path:
                return None
        from ._lod import controller_of

        ctl = controller_of(self.points_layer)
        if ctl is not None:  # every nucleus of the store, not the window the viewer holds
            from ..io.point_export import export_store

            ctl.flush()
            return str(export_store(ctl.store, path))
        yx, cls, sc, _src = self._points_values()
        writer = write_points_geojson if str(path).lower().endswith((".geojson", ".json")) else write_points_csv
        writer(path, yx, cls, sc, mpp=layer_mpp(self.image_layer))
        return str(path)

    # ------------------------------------------------------------------ training
    def snapshots(self) -> list:
        from ..methods.detection.finetune.job import Snapshot
        from ._layers import image_source

        if self.points_layer is None or self.image_layer is None:
            raise JobError("start correcting (choose the image and its points) before training")
        self.save_now()
        yx, cls, _sc, src = self._points_values()
        return [Snapshot(image_source(self.image_layer), yx, cls, src, self.regions(), self.project,
                         name=self.image_layer.name, mpp=self.pixel_size.override())]

    def _trained(self, summary: dict) -> None:
        """A new model was saved: it becomes the start model here (the Detect dock lists it)."""
        self.schedule_save()
