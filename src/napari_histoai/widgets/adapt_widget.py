"""'Adapt from fluorescence' dock (CyC-PDAM): segment nuclei instances of an H&E image with an
adapted model (the bundled one or one trained here), and adapt a model to the user's stain from
labelled fluorescence (the bundled CC0 set, a folder, or open layers) and unlabelled H&E (open
images or a folder). Numerics live in ``methods.adaptation``; this file wires the two sections
(``_adapt_segment``, ``_adapt_train``) into one dock."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..engine.devices import DEVICE_CHOICES
from ..models import on_models_changed
from ._adapt_segment import AdaptSegmentSection, drop_temporary_store
from ._adapt_train import AdaptTrainSection
from ._runner import models_listener


class AdaptWidget(QWidget):
    """Dock widget. ``segment`` (model, image, scope, Run; its ``labels_layer`` and
    ``last_result``) and ``train`` (sources, targets, config, Train; its ``summary``) are its two
    sections, kept for scripts and tests."""

    _models_saved = Signal()

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.segment = AdaptSegmentSection(napari_viewer, self.device_combo.currentText)
        self.train = AdaptTrainSection(napari_viewer, self.device_combo.currentText, on_trained=self._trained)

        sbox, tbox = QGroupBox("Segment nuclei (instances)"), QGroupBox("Adapt to my stain")
        QVBoxLayout(sbox).addWidget(self.segment)
        QVBoxLayout(tbox).addWidget(self.train)
        inner = QWidget()
        lay = QVBoxLayout(inner)
        dev = QFormLayout()
        dev.addRow("Device", self.device_combo)
        lay.addLayout(dev)
        lay.addWidget(sbox)
        lay.addWidget(tbox)
        lay.addStretch(1)
        scroll = QScrollArea()  # the dock is tall: it scrolls rather than forcing napari's window size
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        self._scroll = scroll
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self.refresh_layers()
        # a model saved by the training job (worker thread) reaches the selector through a queued signal
        self._models_saved.connect(lambda: self.segment.refresh_models())
        on_models_changed(models_listener(self, "Adapt from fluorescence"))
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(drop_temporary_store)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt naming)
        """Once styled, the dock is at least as wide as its content: no sideways scrolling."""
        super().showEvent(event)
        need = self._scroll.widget().minimumSizeHint().width() + self._scroll.verticalScrollBar().sizeHint().width()
        self._scroll.setMinimumWidth(need + 6)

    def refresh_layers(self, *_a) -> None:
        self.segment.refresh_layers()
        self.train.refresh()

    def _trained(self, summary: dict) -> None:
        """The new model is offered and selected in the segment section."""
        self.segment.refresh_models(select=summary["path"].name)
