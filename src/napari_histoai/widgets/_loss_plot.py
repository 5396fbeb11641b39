"""A tiny live line plot of training losses (QPainter; no plotting library needed)."""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QWidget

COLORS = {"loss": (230, 230, 230), "class": (230, 80, 80), "point": (80, 160, 250), "global": (240, 200, 40),
          "fg": (190, 110, 230), "dist": (80, 200, 160)}


class LossPlot(QWidget):
    """``add(step, {"loss": .., "class": .., ...})`` appends points; ``clear()`` resets."""

    def __init__(self, parent=None, keys=("loss", "class", "point", "global")):
        super().__init__(parent)
        self.keys = tuple(keys)
        self.series: dict[str, list[tuple[float, float]]] = {k: [] for k in self.keys}
        self.marks: list[float] = []  # steps where a round ended
        self.setMinimumHeight(110)

    def clear(self) -> None:
        self.series = {k: [] for k in self.keys}
        self.marks = []
        self.update()

    def add(self, step: float, values: dict) -> None:
        for k in self.keys:
            v = values.get(k)
            if isinstance(v, (int, float)) and v == v:
                self.series[k].append((float(step), float(v)))
        self.update()

    def mark(self, step: float) -> None:
        self.marks.append(float(step))
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt naming)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = self.rect().adjusted(30, 6, -6, -16)
        p.fillRect(self.rect(), QColor(38, 41, 48))
        pts = [xy for s in self.series.values() for xy in s]
        p.setPen(QColor(150, 150, 150))
        if not pts:
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, "losses appear here while training")
            return
        x0, x1 = min(x for x, _ in pts), max(x for x, _ in pts)
        y1 = max(y for _, y in pts) or 1.0
        x1 = x1 if x1 > x0 else x0 + 1

        def pos(x, y):
            return QPointF(r.left() + (x - x0) / (x1 - x0) * r.width(), r.bottom() - y / y1 * r.height())

        p.drawText(2, r.top() + 10, f"{y1:.2g}")
        p.drawText(2, r.bottom(), "0")
        for m in self.marks:
            p.setPen(QPen(QColor(110, 110, 110), 1, Qt.PenStyle.DashLine))
            p.drawLine(pos(m, 0), pos(m, y1))
        lx = r.left() + 4
        for k, s in self.series.items():
            if not s:
                continue
            p.setPen(QPen(QColor(*COLORS.get(k, (200, 200, 200))), 1.5))
            for a, b in zip(s, s[1:]):
                p.drawLine(pos(*a), pos(*b))
            p.drawText(lx, self.height() - 3, k)
            lx += 8 * len(k) + 12
        p.end()
