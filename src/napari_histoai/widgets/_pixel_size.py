"""The pixel-size row every dock that runs a model shows: the image's µm/px, editable, and where
it came from (the file, or assumed because the file has none)."""

from __future__ import annotations

from typing import Optional

from qtpy.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QWidget

from ._layers import layer_mpp

ASSUMED_MPP = 0.5  # 20x: the bundled models' resolution, shown when the image has no pixel size


class PixelSizeRow(QWidget):
    """A spin box (µm/px) and a note. ``set_layer(layer)`` shows the layer's pixel size;
    ``override()`` is what a job should get as ``mpp``: None when the file's value stands."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.spin = QDoubleSpinBox()
        self.spin.setDecimals(4)
        self.spin.setRange(0.01, 100.0)
        self.spin.setSingleStep(0.05)
        self.spin.setSuffix(" µm/px")
        self.spin.setValue(ASSUMED_MPP)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self._file_mpp: Optional[float] = None
        self._layer = None
        self._typed = False  # the user changed the value
        self.spin.valueChanged.connect(self._edited)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.spin)
        row.addWidget(self.note, 1)

    def set_layer(self, layer) -> None:
        """Show ``layer``'s pixel size (a value the user typed is kept while the layer stays)."""
        if layer is not None and layer is self._layer:
            return
        self._layer, self._typed = layer, False
        self._file_mpp = layer_mpp(layer) if layer is not None else None
        self.spin.blockSignals(True)
        self.spin.setValue(self._file_mpp or ASSUMED_MPP)
        self.spin.blockSignals(False)
        self._describe()

    def _edited(self, *_a) -> None:
        self._typed = True
        self._describe()

    def _describe(self) -> None:
        if self._file_mpp is None and not self._typed:
            self.note.setText("assumed: the image has no pixel size (set it if you know it)")
        elif self._file_mpp is None:
            self.note.setText("set by you (the image has no pixel size)")
        elif self.override() is None:
            self.note.setText("from the file")
        else:
            self.note.setText(f"set by you (the file says {self._file_mpp:g})")

    def override(self) -> Optional[float]:
        """The µm/px to run with, or None when it is the file's own (or, for an image without one,
        when the user did not set it: the job then assumes the model's and says so)."""
        v = float(self.spin.value())
        if self._file_mpp is None:
            return v if self._typed else None
        return None if abs(v - self._file_mpp) < 5e-5 else v
