"""Class palette for the correction dock: one button per class with its colour, its hotkey
(1..K) and a live count. ``chosen`` is emitted with the class name when a button is pressed."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGridLayout, QLabel, QPushButton, QWidget

from ..classes import color_map


class ClassPalette(QWidget):
    chosen = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.classes: list[str] = []
        self.current: str = ""
        self.buttons: dict[str, QPushButton] = {}
        self.counts: dict[str, QLabel] = {}
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)

    def set_classes(self, classes) -> None:
        while self._grid.count():
            w = self._grid.takeAt(0).widget()
            if w is not None:
                w.deleteLater()
        self.classes = list(classes)
        self.buttons, self.counts = {}, {}
        for i, (name, rgb) in enumerate(color_map(self.classes).items()):
            key = f"{i + 1}" if i < 9 else ""
            btn = QPushButton(f"{key}  {name}" if key else name)
            btn.setCheckable(True)
            r, g, b = (int(255 * v) for v in rgb)
            btn.setStyleSheet(f"QPushButton {{ border-left: 14px solid rgb({r},{g},{b}); text-align: left; padding: 3px 6px; }}"
                              f"QPushButton:checked {{ font-weight: bold; }}")
            btn.setToolTip(f"Class '{name}' for new points and the selected points (key {key} on the points layer)")
            btn.clicked.connect(lambda _=False, n=name: self.chosen.emit(n))
            cnt = QLabel("0")
            self._grid.addWidget(btn, i, 0)
            self._grid.addWidget(cnt, i, 1)
            self.buttons[name], self.counts[name] = btn, cnt
        if self.classes:
            self.set_current(self.current if self.current in self.classes else self.classes[0])

    def set_current(self, name: str) -> None:
        self.current = name
        for n, b in self.buttons.items():
            b.setChecked(n == name)

    def set_counts(self, counts: dict) -> None:
        for n, lab in self.counts.items():
            lab.setText(str(int(counts.get(n, 0))))
