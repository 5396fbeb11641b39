"""The "Train on corrections" part of the correction dock: start model, new name, mixed
supervision options, Train / Cancel with progress, a live loss plot and the result line.

``start(snapshots)`` builds the job; the dock supplies the snapshots of its image."""

from __future__ import annotations

from typing import Callable, Optional

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..engine.devices import DEVICE_CHOICES
from ..errors import JobError
from ._loss_plot import LossPlot
from ._runner import JobPanel, notify_error

VIEWS = {"AAT (adaptive affine views)": "aat", "Random affine views": "affine", "Random crops": "crop", "Whole crop": "none"}


def _spin(lo, hi, val, step=1, decimals=None):
    s = QDoubleSpinBox() if decimals is not None else QSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    if decimals is not None:
        s.setDecimals(decimals)
    s.setValue(val)
    return s


class TrainSection(QWidget):
    def __init__(self, get_snapshots: Callable[[], list], on_trained: Optional[Callable[[dict], None]] = None):
        super().__init__()
        self._get_snapshots, self._on_trained = get_snapshots, on_trained
        self.last_summary: Optional[dict] = None
        self.model_combo = QComboBox()
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("name of the new model")
        self.rounds = _spin(1, 10, 2)
        self.steps = _spin(1, 100000, 250, 10)   # x 2 rounds: ~5 CPU-minutes on ten 500 px images
        self.T = _spin(0.0, 1.0, 0.4, 0.05, 2)   # confident pseudo labels only
        self.T.setSpecialValueText("model's threshold")  # 0 = auto
        self.V = _spin(1.0, 20.0, 4.0, 0.5, 1)
        self.ratio = QLineEdit("4:1:1")
        self.ratio.setToolTip("crops per batch: fine (reviewed) : pseudo labels : no-target (paper 2:1:7)")
        self.pseudo_check = QCheckBox("Pseudo labels outside reviewed regions (EM rounds)")
        self.pseudo_check.setChecked(True)    # measured: the best arm from the bundled model (README)
        self.views_combo = QComboBox()
        self.views_combo.addItems(list(VIEWS))
        self.global_check = QCheckBox("Global (EMA) loss")
        self.global_check.setChecked(False)   # as in the benchmark's best arm
        self.fusestyle_check = QCheckBox("FuseStyle")
        self.fusestyle_check.setChecked(True)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICE_CHOICES))
        self.train_btn = QPushButton("Train on corrections")
        self.train_btn.clicked.connect(self.start)
        self.panel = JobPanel()
        self.plot = LossPlot()
        self.result = QLabel("")
        self.result.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Start from", self.model_combo)
        form.addRow("New model", self.name_edit)
        form.addRow("EM rounds", self.rounds)
        form.addRow("Steps / round", self.steps)
        form.addRow("Pseudo T", self.T)
        form.addRow("Pseudo V", self.V)
        form.addRow("Mix R", self.ratio)
        form.addRow("Views", self.views_combo)
        form.addRow("Device", self.device_combo)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        for w in (self.pseudo_check, self.global_check, self.fusestyle_check, self.train_btn, self.panel, self.plot,
                  self.result):
            lay.addWidget(w)
        self.refresh_models()

    def refresh_models(self, select: Optional[str] = None) -> None:
        from ..methods.detection.registry import CLASSICAL, available_detectors

        cur = select or self.model_combo.currentText()
        names = [n for n in available_detectors() if n != CLASSICAL]
        self.model_combo.clear()
        self.model_combo.addItems(names)
        if cur in names:
            self.model_combo.setCurrentText(cur)

    def config(self):
        from ..methods.detection.finetune.job import mixed_config

        m = mixed_config(ratio=self.ratio.text(), rounds=self.rounds.value(), steps=self.steps.value(),
                         V=self.V.value(), pseudo=self.pseudo_check.isChecked(),
                         views=VIEWS[self.views_combo.currentText()], global_loss=self.global_check.isChecked(),
                         fusestyle=self.fusestyle_check.isChecked())
        m.T = self.T.value() or None  # 0 is shown as "model's threshold": None, not the 0.4 default
        return m

    def start(self):
        """Start training; returns the worker (None when synchronous or refused)."""
        from ..methods.detection.finetune.job import (
            check_model_name,
            train_corrections_job,
        )

        try:
            name = check_model_name(self.name_edit.text())
            start = self.model_combo.currentText()
            if not start:
                raise JobError("no trained detector to start from")
            job = train_corrections_job(self._get_snapshots(), start, name, self.config(),
                                        device=self.device_combo.currentText())
        except JobError as e:
            notify_error(str(e))
            return None
        self.train_btn.setEnabled(False)
        self.plot.clear()
        self.result.setText("")
        return self.panel.run(job, on_done=self._done, on_progress=self._progress,
                              on_cancel=self._reenable, on_error=lambda _m: self._reenable())

    def _reenable(self) -> None:
        self.train_btn.setEnabled(True)

    def _progress(self, p) -> None:
        info = p.info or {}
        if "loss" in info:
            self.plot.add(info.get("step", p.done), info)
        if "val" in info and info.get("round"):
            self.plot.mark(info.get("step", p.done))

    def _done(self, summary: dict) -> None:
        self._reenable()
        self.last_summary = summary
        name = summary["model"].replace("\\", "/").rsplit("/", 1)[-1]
        self.refresh_models(select=name)
        b, a = summary.get("val_before") or {}, summary.get("val") or {}
        msg = f"Saved model '{name}' ({summary['steps']} steps, {summary['cpu_seconds']:.0f} s CPU)."
        if a:
            msg += (f"\nHeld-out reviewed blocks: F_d {b.get('f_d', 0):.3f} -> {a['f_d']:.3f}, "
                    f"mean F_c {b.get('mean_f_c', 0):.3f} -> {a['mean_f_c']:.3f}")
            if summary.get("selected_round") == 0:
                msg += ("\nTraining did not beat the start model there, so the saved model keeps its "
                        "weights (review more regions: the held-out part grows with them).")
            t0, t1 = summary.get("threshold_before"), summary.get("threshold")
            if t0 is not None and t1 is not None and abs(t1 - t0) > 1e-9:
                msg += f"\nScore threshold {t0:.2f} -> {t1:.2f} (the best on the held-out reviewed blocks)."
        else:
            msg += "\n(no validation: the reviewed regions are too small to hold a part out)"
        self.result.setText(msg)
        self.panel.status.setText("Done")
        if self._on_trained is not None:
            self._on_trained(summary)
