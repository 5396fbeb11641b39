"""Training inputs of the 'Adapt from fluorescence' dock. Source (labelled fluorescence): the
bundled CC0 set, a folder pair (images + masks named alike), or pairs of open layers (an Image
with its Labels) chosen in a small table. Target (unlabelled H&E): open image layers ticked in a
list, or a folder. Layers are read here in the GUI thread only when cheap (source pairs, checked
at once); files and targets are read in the worker."""

from __future__ import annotations

from typing import Optional

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from ..errors import JobError
from ._adapt_jobs import TARGET_MAX_PX, SourceFolders, TargetSpec, is_output
from ._heatmap_train import _browse_row
from ._layers import image_source, layer_mpp, layer_shape, visible_region

SRC_BUNDLED, SRC_FOLDER, SRC_LAYERS = "Bundled fluorescence set (CC0)", "Folder", "Layers"
TGT_LAYERS, TGT_FOLDER = "Open H&E images", "Folder"


def _layer_names(viewer, kind) -> list[str]:
    return [ly.name for ly in viewer.layers if isinstance(ly, kind) and not is_output(ly)]


def _pages(owner: QWidget, combo: QComboBox, pages: list) -> None:
    """``combo`` above ``pages``, only the chosen page shown (a hidden page takes no room)."""
    lay = QVBoxLayout(owner)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.addWidget(combo)
    for page in pages:
        lay.addWidget(page)

    def show(i: int) -> None:
        for j, page in enumerate(pages):
            page.setVisible(j == i)

    combo.currentIndexChanged.connect(show)
    show(combo.currentIndex())


def _level0(layer) -> np.ndarray:
    return np.asarray(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)


class SourcePicker(QWidget):
    """``sources()``: what the training job reads (SourceFolders) or the checked SourceImages of
    the layer pairs; ``describe()``: the same in words for the model's config."""

    def __init__(self, viewer):
        super().__init__()
        self.viewer = viewer
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([SRC_BUNDLED, SRC_FOLDER, SRC_LAYERS])
        self.images_edit, self.masks_edit = QLineEdit(), QLineEdit()
        self.images_edit.setPlaceholderText("folder of fluorescence images")
        self.masks_edit.setPlaceholderText("folder of instance masks (named like the images)")
        self.pairs = QTableWidget(0, 2)
        self.pairs.setHorizontalHeaderLabels(["Fluorescence image", "Instance labels"])
        for c in (0, 1):
            self.pairs.horizontalHeader().setSectionResizeMode(c, QHeaderView.ResizeMode.Stretch)
        self.pairs.verticalHeader().setVisible(False)
        self.pairs.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.pairs.setMaximumHeight(110)
        add, rm = QPushButton("Add pair"), QPushButton("Remove last")
        add.clicked.connect(lambda: self.add_pair())
        rm.clicked.connect(lambda: self.pairs.setRowCount(max(0, self.pairs.rowCount() - 1)))

        bundled = QLabel("10 nuclei images with instance masks (BBBC039: Hoechst-stained U2OS; CC0)")
        bundled.setWordWrap(True)
        folder = QWidget()
        ff = QFormLayout(folder)
        ff.setContentsMargins(0, 0, 0, 0)
        ff.addRow("Images", _browse_row(self.images_edit, lambda: QFileDialog.getExistingDirectory(
            self, "Folder of fluorescence images")))
        ff.addRow("Masks", _browse_row(self.masks_edit, lambda: QFileDialog.getExistingDirectory(
            self, "Folder of instance masks")))
        layers = QWidget()
        ll = QVBoxLayout(layers)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.pairs)
        btns = QHBoxLayout()
        btns.addWidget(add)
        btns.addWidget(rm)
        ll.addLayout(btns)
        _pages(self, self.mode_combo, [bundled, folder, layers])

    # ------------------------------------------------------------------ layer pairs
    def add_pair(self, image: Optional[str] = None, labels: Optional[str] = None) -> None:
        """A new row of the pairs table (``image`` / ``labels``: layer names to choose)."""
        from napari.layers import Image, Labels

        r = self.pairs.rowCount()
        self.pairs.setRowCount(r + 1)
        for c, (kind, name) in enumerate(((Image, image), (Labels, labels))):
            combo = QComboBox()
            combo.addItems(_layer_names(self.viewer, kind))
            if name is not None:
                combo.setCurrentText(name)
            self.pairs.setCellWidget(r, c, combo)

    def refresh(self, *_a) -> None:
        """New layer lists in the pairs table, keeping what each row had chosen."""
        from napari.layers import Image, Labels

        for r in range(self.pairs.rowCount()):
            for c, kind in ((0, Image), (1, Labels)):
                combo = self.pairs.cellWidget(r, c)
                cur, names = combo.currentText(), _layer_names(self.viewer, kind)
                combo.clear()
                combo.addItems(names)
                if cur in names:
                    combo.setCurrentText(cur)

    def _layer_sources(self) -> list:
        from ..methods.adaptation import check_source

        out = []
        for r in range(self.pairs.rowCount()):
            img, lab = (self.pairs.cellWidget(r, c).currentText() for c in (0, 1))
            if img not in self.viewer.layers or lab not in self.viewer.layers:
                raise JobError(f"pair {r + 1}: choose a fluorescence Image layer and its Labels layer")
            out.append(check_source(_level0(self.viewer.layers[img]), _level0(self.viewer.layers[lab]), img))
        if not out:
            raise JobError("add pairs of a fluorescence Image layer and its instance Labels layer (Add pair)")
        return out

    # ------------------------------------------------------------------ what to train on
    def sources(self):
        mode = self.mode_combo.currentText()
        if mode == SRC_BUNDLED:
            from ..bundled import fluorescence_source

            images, masks = fluorescence_source()
            return SourceFolders(str(images), str(masks), "bundled CC0 set")
        if mode == SRC_FOLDER:
            images, masks = self.images_edit.text().strip(), self.masks_edit.text().strip()
            if not (images and masks):
                raise JobError("choose the folder of fluorescence images and the folder of their masks")
            return SourceFolders(images, masks, "folder")
        return self._layer_sources()

    def describe(self) -> dict:
        mode = self.mode_combo.currentText()
        if mode == SRC_FOLDER:
            return {"source": "folder", "source_images": self.images_edit.text(),
                    "source_masks": self.masks_edit.text()}
        return {"source": "bundled fluorescence (BBBC039, CC0)" if mode == SRC_BUNDLED else "napari layers"}


class TargetPicker(QWidget):
    """Open H&E images (ticked; RGB layers are ticked when they appear) or a folder. An open image
    larger than TARGET_MAX_PX is used through its visible part."""

    def __init__(self, viewer):
        super().__init__()
        self.viewer = viewer
        self._checked: dict[str, bool] = {}
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([TGT_LAYERS, TGT_FOLDER])
        self.list = QListWidget()
        self.list.setMaximumHeight(90)
        self.list.setToolTip(f"H&E images to adapt to; one larger than {TARGET_MAX_PX // 1_000_000} MP "
                             "(a slide) is used through its part in view")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder of H&E tiles or regions")
        folder = _browse_row(self.folder_edit, lambda: QFileDialog.getExistingDirectory(self, "Folder of H&E images"))
        _pages(self, self.mode_combo, [self.list, folder])

    def refresh(self, *_a) -> None:
        from napari.layers import Image

        for i in range(self.list.count()):
            it = self.list.item(i)
            self._checked[it.text()] = it.checkState() == Qt.CheckState.Checked
        self.list.clear()
        for ly in self.viewer.layers:
            if not isinstance(ly, Image) or is_output(ly):
                continue
            it = QListWidgetItem(ly.name)
            it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            on = self._checked.setdefault(ly.name, bool(getattr(ly, "rgb", False)))
            it.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            self.list.addItem(it)

    def set_checked(self, name: str, on: bool = True) -> None:
        items = self.list.findItems(name, Qt.MatchFlag.MatchExactly)
        if not items:
            raise JobError(f"no open image named {name!r}")
        items[0].setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def checked(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]

    def targets(self):
        """A folder path, or one TargetSpec per ticked layer (read later, in the worker)."""
        if self.mode_combo.currentText() == TGT_FOLDER:
            folder = self.folder_edit.text().strip()
            if not folder:
                raise JobError("choose the folder of target H&E images")
            return folder
        out = []
        for name in self.checked():
            layer = self.viewer.layers[name]
            h, w = layer_shape(layer)
            region = visible_region(self.viewer, layer) if h * w > TARGET_MAX_PX else None
            out.append(TargetSpec(name, image_source(layer), region, layer_mpp(layer)))
        if not out:
            raise JobError("tick at least one open H&E image to adapt to (or choose a folder)")
        return out

    def describe(self) -> dict:
        if self.mode_combo.currentText() == TGT_FOLDER:
            return {"target": "folder", "target_images": self.folder_edit.text()}
        return {"target": "napari layers"}
