"""Thumbnails of CyC-PDAM's pixel-level adaptation, shown in the dock once the synthesis stage is
done: per example the fluorescence source, the H&E the CycleGAN synthesised from it and the same
after nuclei inpainting. (Kept in the dock rather than as layers: they have no place on the
slide, and unit-less layers beside µm ones would upset napari's world units.)"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QWidget

COLUMNS = (("source", "fluorescence"), ("synthesised", "synthesised H&E"), ("inpainted", "inpainted"))


def to_pixmap(a: np.ndarray, size: int) -> QPixmap:
    """A uint8 grey [H, W] or RGB [H, W, 3] array as a pixmap fitting ``size`` x ``size``."""
    a = np.ascontiguousarray(np.asarray(a, np.uint8))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = np.ascontiguousarray(a[..., 0])
    h, w = a.shape[:2]
    if a.ndim == 2:
        img = QImage(a.data, w, h, w, QImage.Format.Format_Grayscale8)
    else:
        a = np.ascontiguousarray(a[..., :3])
        img = QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(img.copy()).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                                Qt.TransformationMode.SmoothTransformation)


class PreviewGrid(QWidget):
    """``show_preview(preview)`` lays out up to ``max_rows`` examples, one column per kind;
    ``n_shown`` says how many examples are on display."""

    def __init__(self, thumb: int = 96, max_rows: int = 3):
        super().__init__()
        self.thumb, self.max_rows = thumb, max_rows
        self.n_shown = 0
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.setVisible(False)

    def clear(self) -> None:
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.n_shown = 0
        self.setVisible(False)

    def show_preview(self, preview: dict) -> None:
        self.clear()
        cols = [(k, title) for k, title in COLUMNS if preview.get(k) is not None and len(preview[k])]
        if not cols:
            return
        for c, (_k, title) in enumerate(cols):
            head = QLabel(title)
            head.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.grid.addWidget(head, 0, c)
        rows = min(self.max_rows, *(len(preview[k]) for k, _t in cols))
        for r in range(rows):
            for c, (k, _t) in enumerate(cols):
                cell = QLabel()
                cell.setAlignment(Qt.AlignmentFlag.AlignCenter)
                cell.setPixmap(to_pixmap(preview[k][r], self.thumb))
                self.grid.addWidget(cell, r + 1, c)
        self.n_shown = rows
        self.setVisible(True)
