"""The "Adapt to my stain" part of the 'Adapt from fluorescence' dock: source and target images,
config (compact / paper, steps, CycleGAN steps), model name, Train / Cancel with progress and the
stage, a live loss plot per trained component (CycleGAN; domain-adaptive Mask R-CNN), thumbnails
of the synthesised H&E after the synthesis stage, and the result line. The model is saved into
``user_models_dir()`` only when training finished."""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Optional

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import JobError
from . import _loss_plot
from ._adapt_jobs import train_and_save_job
from ._adapt_preview import PreviewGrid
from ._adapt_sources import SourcePicker, TargetPicker
from ._heatmap_sources import model_folder
from ._loss_plot import LossPlot
from ._runner import JobPanel, notify_error

GAN_KEYS = ("G", "D", "cycle")
DET_KEYS = ("rpn", "det", "mask", "sem", "img_da", "sem_da", "ins_da")
STAGES = {"cyclegan": "1/3 CycleGAN (fluorescence -> H&E)", "synthesis": "2/3 synthesis and nuclei inpainting",
          "maskrcnn": "3/3 domain-adaptive Mask R-CNN"}
for _k, _c in zip(GAN_KEYS + DET_KEYS, [(240, 200, 40), (80, 160, 250), (230, 230, 230), (230, 80, 80),
                                        (120, 220, 120), (200, 120, 240), (240, 150, 60), (150, 150, 150),
                                        (90, 210, 210), (240, 120, 180)]):
    _loss_plot.COLORS.setdefault(_k, _c)


def default_name() -> str:
    return f"cycpdam-{datetime.now():%Y%m%d-%H%M}"


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


def add_losses(plot: LossPlot, step: float, losses: dict) -> None:
    """Plot ``losses`` at ``step``; a loss the plot did not know yet gets its own line. (The
    task re-weighting factors ``w_*`` that come with the losses are shown as text instead.)"""
    for k in losses:
        if k not in plot.series:
            plot.keys = plot.keys + (k,)
            plot.series[k] = []
    plot.add(step, losses)


class AdaptTrainSection(QWidget):
    """``extra_config``: config overrides the section does not show (e.g. ``crop`` for a quick
    run); ``summary``: the last training's {result, path, n_sources, n_targets}; ``plots``: the
    loss plot of each trained stage."""

    def __init__(self, viewer, device: Callable[[], str], on_trained: Optional[Callable[[dict], None]] = None):
        from ..methods.adaptation import PRESETS, preset

        super().__init__()
        self._device, self._on_trained = device, on_trained
        self.extra_config: dict = {}
        self.summary: Optional[dict] = None
        self.source = SourcePicker(viewer)
        self.target = TargetPicker(viewer)
        self.source.setToolTip("labelled fluorescence: nuclei images with instance masks")
        self.target.setToolTip("unlabelled H&E images in the stain to adapt to")
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip("compact: a small network, minutes to an hour on a CPU; paper: ResNet-50-GN "
                                     "Mask R-CNN and the paper's schedules (GPU)")
        d = preset("compact")
        self.steps_spin = _spin(1, 1_000_000, d.steps)
        self.gan_steps_spin = _spin(1, 1_000_000, d.gan_steps)
        self.preset_combo.currentTextChanged.connect(self._preset_changed)
        self.name_edit = QLineEdit(default_name())
        self.train_btn = QPushButton("Train adapted model")
        self.train_btn.clicked.connect(self.start)
        self.panel = JobPanel()
        self.stage_label = QLabel("")
        self.plots = {"cyclegan": LossPlot(keys=GAN_KEYS), "maskrcnn": LossPlot(keys=DET_KEYS)}
        self.preview = PreviewGrid()
        self.result = QLabel("")
        self.result.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Source", self.source)
        form.addRow("Target", self.target)
        form.addRow("Config", self.preset_combo)
        form.addRow("Mask R-CNN steps", self.steps_spin)
        form.addRow("CycleGAN steps", self.gan_steps_spin)
        form.addRow("Model name", self.name_edit)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        for w in (self.train_btn, self.panel, self.stage_label, QLabel("CycleGAN losses"), self.plots["cyclegan"],
                  QLabel("Mask R-CNN losses"), self.plots["maskrcnn"], self.preview, self.result):
            lay.addWidget(w)

    def refresh(self, *_a) -> None:
        self.source.refresh()
        self.target.refresh()

    def _preset_changed(self, name: str) -> None:
        from ..methods.adaptation import preset

        d = preset(name)
        self.steps_spin.setValue(d.steps)
        self.gan_steps_spin.setValue(d.gan_steps)

    def config(self):
        from ..methods.adaptation import preset

        return preset(self.preset_combo.currentText(), steps=self.steps_spin.value(),
                      gan_steps=self.gan_steps_spin.value(), **self.extra_config).validate()

    def start(self):
        """Start training; returns the worker (None when synchronous or refused)."""
        try:
            out = model_folder(self.name_edit.text())
            cfg = self.config()
            sources, targets = self.source.sources(), self.target.targets()
            training = {"trained_in": "napari dock", **self.source.describe(), **self.target.describe()}
            job = train_and_save_job(out, cfg, sources, targets, device=self._device(), training=training)
        except JobError as e:
            notify_error(str(e))
            return None
        self.train_btn.setEnabled(False)
        for p in self.plots.values():
            p.clear()
        self.preview.clear()
        self.stage_label.setText("")
        self.result.setText(f"A model named {out.name} exists: it is replaced when training finishes."
                            if out.exists() else "")
        return self.panel.run(job, on_done=self._done, on_progress=self._progress,
                              on_cancel=self._reenable, on_error=lambda _m: self._reenable())

    def _reenable(self) -> None:
        self.train_btn.setEnabled(True)

    def _progress(self, p) -> None:
        info = p.info or {}
        stage = info.get("stage")
        losses = {k: v for k, v in (info.get("losses") or {}).items() if not k.startswith("w_")}
        weights = {k[2:]: v for k, v in (info.get("losses") or {}).items() if k.startswith("w_")}
        if stage:
            tr = ", ".join(f"{k} {v:.2f}" for k, v in weights.items())
            self.stage_label.setText(f"Stage {STAGES.get(stage, stage)}" + (f"\ntask weights: {tr}" if tr else ""))
        if losses and stage in self.plots:
            add_losses(self.plots[stage], p.done, losses)
        if info.get("preview"):
            self.preview.show_preview(info["preview"])

    def _done(self, summary: dict) -> None:
        self._reenable()
        self.summary = summary
        res, name = summary["result"], summary["path"].name
        msg = (f"Saved model '{name}': {summary['n_sources']} fluorescence source image(s), {summary['n_targets']} "
               f"H&E target(s); {res.seconds:.0f} s.")
        self.result.setText(msg + "".join(f"\nNote: {n}" for n in (getattr(res, "notes", None) or [])))
        self.stage_label.setText("")
        self.panel.status.setText("Done")
        self.name_edit.setText(default_name())  # the next training does not replace this model
        if self._on_trained is not None:
            self._on_trained(summary)
