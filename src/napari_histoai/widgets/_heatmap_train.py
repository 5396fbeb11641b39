"""The "Train" part of the 'Tumour heatmap' dock: training slides (folder + labels CSV +
GeoJSON annotations, and/or open slides labelled in a table), config, model name, Train / Cancel
with progress, a live loss plot (stage 1 and stage 2 losses, a dashed line per EM round) and the
result line. The model is saved into ``user_models_dir()`` only when training finished."""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Optional

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import JobError
from ..methods.heatmap.config import MODES, PRESETS, config_from
from . import _loss_plot
from ._heatmap_sources import OpenSlidesTable, model_folder, train_and_save_job
from ._loss_plot import LossPlot
from ._runner import JobPanel, notify_error

_loss_plot.COLORS.setdefault("stage 1", (230, 230, 230))
_loss_plot.COLORS.setdefault("stage 2", (240, 200, 40))


def default_name() -> str:
    return f"heatmap-{datetime.now():%Y%m%d-%H%M}"


def _browse_row(edit: QLineEdit, pick: Callable[[], str]) -> QWidget:
    row = QWidget()
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    btn = QToolButton()
    btn.setText("…")

    def browse() -> None:
        p = pick()
        if p:
            edit.setText(p)

    btn.clicked.connect(browse)
    lay.addWidget(edit, 1)
    lay.addWidget(btn)
    return row


class HeatmapTrainSection(QWidget):
    """``extra_config``: config overrides the section does not show (e.g. ``init_steps`` for a
    quick run); ``summary``: the last training's {result, path, notes, n_slides, n_annotated}."""

    def __init__(self, viewer, device: Callable[[], str], on_trained: Optional[Callable[[dict], None]] = None):
        super().__init__()
        self._device, self._on_trained = device, on_trained
        self.extra_config: dict = {}
        self.summary: Optional[dict] = None
        self._round, self._last_done = None, 0
        self.folder_edit, self.labels_edit, self.ann_edit = QLineEdit(), QLineEdit(), QLineEdit()
        self.folder_edit.setPlaceholderText("folder of slides")
        self.labels_edit.setPlaceholderText("CSV: slide,label (tumour / normal)")
        self.folder_edit.setToolTip("empty: the labels CSV's folder")
        self.ann_edit.setPlaceholderText("optional: <slide>.geojson tumour regions")
        self.table = OpenSlidesTable(viewer)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip("compact: 1 µm/px, minutes on a CPU; paper: 20x, 512 px patches (GPU)")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(list(MODES))
        self.mode_combo.setToolTip("mixed: regions + slide labels (EM rounds); pixel: regions only; "
                                   "image: slide labels only (top-k MIL)")
        self.rounds_spin = QSpinBox()
        self.rounds_spin.setRange(0, 20)
        self.rounds_spin.setValue(config_from("compact").rounds)
        self.fusestyle_check = QCheckBox("FuseStyle (style mixing)")
        self.name_edit = QLineEdit(default_name())
        self.train_btn = QPushButton("Train heatmap model")
        self.train_btn.clicked.connect(self.start)
        self.panel = JobPanel()
        self.plot = LossPlot(keys=("stage 1", "stage 2"))
        self.result = QLabel("")
        self.result.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Slides folder", _browse_row(self.folder_edit, lambda: QFileDialog.getExistingDirectory(
            self, "Folder of training slides")))
        form.addRow("Labels CSV", _browse_row(self.labels_edit, lambda: QFileDialog.getOpenFileName(
            self, "Slide labels", filter="CSV (*.csv);;All files (*)")[0]))
        form.addRow("Annotations", _browse_row(self.ann_edit, lambda: QFileDialog.getExistingDirectory(
            self, "Folder of GeoJSON tumour regions")))
        form2 = QFormLayout()
        form2.addRow("Config", self.preset_combo)
        form2.addRow("Mode", self.mode_combo)
        form2.addRow("EM rounds", self.rounds_spin)
        form2.addRow("", self.fusestyle_check)
        form2.addRow("Model name", self.name_edit)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        lay.addWidget(self.table)
        lay.addLayout(form2)
        for w in (self.train_btn, self.panel, self.plot, self.result):
            lay.addWidget(w)

    def config(self):
        return config_from(self.preset_combo.currentText(), mode=self.mode_combo.currentText(),
                           rounds=self.rounds_spin.value(), fusestyle=self.fusestyle_check.isChecked(),
                           **self.extra_config)

    def start(self):
        """Start training; returns the worker (None when synchronous or refused)."""
        folder, csv, ann = (e.text().strip() for e in (self.folder_edit, self.labels_edit, self.ann_edit))
        try:
            out = model_folder(self.name_edit.text())
            cfg = self.config()
            extra = self.table.training_slides()
            if not (folder or csv or extra):
                raise JobError("choose a slides folder and a labels CSV, or label open slides in the table")
            job = train_and_save_job(out, cfg, folder=folder, labels_csv=csv, annotations=ann, extra=extra,
                                     device=self._device(),
                                     training={"source": "napari dock", "slides_folder": folder or None,
                                               "labels": csv or None, "annotations": ann or None,
                                               "open_slides": [str(t.path) for t in extra]})
        except JobError as e:
            notify_error(str(e))
            return None
        self.train_btn.setEnabled(False)
        self.plot.clear()
        self._round, self._last_done = None, 0
        self.result.setText(f"A model named {out.name} exists: it is replaced when training finishes."
                            if out.exists() else "")
        return self.panel.run(job, on_done=self._done, on_progress=self._progress,
                              on_cancel=self._reenable, on_error=lambda _m: self._reenable())

    def _reenable(self) -> None:
        self.train_btn.setEnabled(True)

    def _progress(self, p) -> None:
        info = p.info or {}
        r = info.get("round")
        if r is not None and r != self._round:
            if self._round is not None:
                self.plot.mark(self._last_done)  # where the previous round ended
            self._round = r
        self._last_done = p.done
        if "loss" in info:
            self.plot.add(p.done, {"stage 1": info["loss"]})
        if "stage2_loss" in info:
            self.plot.add(p.done, {"stage 2": info["stage2_loss"]})

    def _done(self, summary: dict) -> None:
        self._reenable()
        self.summary = summary
        res, name = summary["result"], summary["path"].name
        rounds = "; ".join(f"round {r['round']}: stage 1 {r['stage1_loss']:.3f}, stage 2 {r['stage2_loss']:.3f}"
                           for r in res.rounds)
        among = " among the EM rounds" if len(res.rounds) > 1 else ""
        msg = (f"Saved model '{name}': kept round {res.best_round} (lowest stage-2 loss{among}); {summary['n_slides']} "
               f"slides, {summary['n_annotated']} with drawn regions; threshold {res.threshold:.3f}; "
               f"{res.seconds:.0f} s.\n{rounds}")
        self.result.setText(msg + "".join(f"\nNote: {n}" for n in summary["notes"]))
        self.panel.status.setText("Done")
        self.name_edit.setText(default_name())  # the next training does not replace this model
        if self._on_trained is not None:
            self._on_trained(summary)
