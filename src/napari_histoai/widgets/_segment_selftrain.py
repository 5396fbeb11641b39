"""The "Self-trained U-Net" part of the 'Segment nuclei' dock (the default method): model (train
a new one on the image, or a saved one), steps, threshold and minimum distance, Train & segment /
Cancel with progress and a live loss plot; the result is an instance Labels layer aligned with
the image in µm. The trained model can be saved under a name and is then offered in the list.

The dock supplies the inputs (image layer, region, pixel size, device, seed); all numerics live
in ``methods.selftrain`` (its jobs run through the engine)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
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
from ..methods.selftrain import (
    KIND,
    SelfTrainConfig,
    load_selftrained,
    save_selftrained,
)
from ..methods.selftrain.job import segment_image_job
from ..models import list_models, read_config
from ._loss_plot import LossPlot
from ._model_folder import offer_model_folder
from ._runner import JobPanel, notify_error
from ._segment_labels import add_labels_result, with_label_pyramid

NEW_MODEL = "Train a new model on the image"
LOSS_KEYS = ("loss", "fg", "dist")


def _double(lo: float, hi: float, value: float, step: float, decimals: int, suffix: str = "") -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(decimals)
    s.setSingleStep(step)
    s.setValue(value)
    if suffix:
        s.setSuffix(suffix)
    return s


def _saved_model_job(folder, settings: dict, image, region, mpp, device, tissue_only):
    """Job: load the saved model (in the worker), use the dock's settings, segment."""
    model = load_selftrained(folder, device=device)
    model.config = replace(model.config, **settings).validate()
    return (yield from segment_image_job(image, model=model, region=region, mpp=mpp, device=device,
                                         tissue_only=tissue_only))


class SelfTrainSection(QWidget):
    """``model`` (the SelfTrainedSegmenter trained or applied last), ``last_result`` (its
    LabelsResult) and ``labels_layer`` are kept for scripts and tests; ``extra_config`` (a dict
    of SelfTrainConfig fields) is merged into the config of the next training (tests use it for
    tiny networks)."""

    def __init__(self, viewer, inputs: Callable[[], tuple], device: Callable[[], object],
                 seed: Callable[[], int], output_key: str = "histoai_segmenter_output"):
        super().__init__()
        self.viewer, self._inputs, self._device, self._seed = viewer, inputs, device, seed
        self._output_key = output_key
        self.model = None
        self.last_result = None
        self.labels_layer = None
        self.extra_config: dict = {}
        self._models: dict = {}
        self._picked: dict = {}  # models chosen from a folder outside the models folders
        self._trained_on: Optional[dict] = None
        d = SelfTrainConfig()

        self.model_combo = QComboBox()
        self.model_combo.currentTextChanged.connect(self._model_chosen)
        self.model_btn = QToolButton()
        self.model_btn.setText("…")
        self.model_btn.setToolTip("use a self-trained model from another folder")
        self.model_btn.clicked.connect(lambda: self.use_model())
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100000)
        self.steps_spin.setSingleStep(50)
        self.steps_spin.setValue(d.steps)
        self.threshold_spin = _double(0.01, 0.99, d.threshold, 0.05, 2)
        self.threshold_spin.setToolTip("nuclei probability above which a pixel belongs to a nucleus")
        self.distance_spin = _double(0.1, 50.0, d.min_distance_um, 0.5, 1, " µm")
        self.distance_spin.setToolTip("minimum distance between the centres of touching nuclei that are split")
        self.run_btn = QPushButton()
        self.run_btn.clicked.connect(self.start)
        self.panel = JobPanel()
        self.plot = LossPlot(keys=LOSS_KEYS)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("name for the trained model")
        self.save_btn = QPushButton("Save model")
        self.save_btn.clicked.connect(lambda: self.save_model())
        self.save_btn.setEnabled(False)

        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.model_btn)
        form.addRow("Model", row)
        form.addRow("Training steps", self.steps_spin)
        form.addRow("Threshold", self.threshold_spin)
        form.addRow("Min distance", self.distance_spin)
        save = QHBoxLayout()
        save.addWidget(self.name_edit, 1)
        save.addWidget(self.save_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(form)
        for w in (self.run_btn, self.panel, self.plot, self.summary):
            lay.addWidget(w)
        lay.addLayout(save)
        self.refresh_models()
        self._model_chosen()

    # ------------------------------------------------------------------ models
    def refresh_models(self, select: Optional[str] = None) -> None:
        """Fill the model selector: a new model first, then the saved self-trained models, then
        folders picked with '…'."""
        cur = select or self.model_combo.currentText()
        found = list_models(KIND)
        self._models = {**{n: found[n] for n in sorted(found)}, **self._picked}
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItems([NEW_MODEL, *self._models])
        if cur in self._models:
            self.model_combo.setCurrentText(cur)
        self.model_combo.blockSignals(False)
        self._model_chosen()

    def use_model(self, folder: Optional[str] = None) -> Optional[str]:
        """Offer the self-trained model in ``folder`` (asked for when None) and select it."""
        return offer_model_folder(self, folder, KIND, "Self-trained segmenter (model folder)", notify_error)

    def _saved(self) -> Optional[Path]:
        name = self.model_combo.currentText()
        return None if name == NEW_MODEL else self._models.get(name)

    def _model_chosen(self, *_a) -> None:
        """A saved model shows its own threshold and distance; training steps apply to new ones."""
        folder = self._saved()
        self.steps_spin.setEnabled(folder is None)
        self.run_btn.setText("Train && segment" if folder is None else "Segment with this model")
        if folder is not None:
            try:
                cfg = SelfTrainConfig.from_dict(read_config(folder, KIND).get("architecture", {}))
            except (JobError, TypeError, ValueError):
                return  # said when the model is used
            self.threshold_spin.setValue(cfg.threshold)
            self.distance_spin.setValue(cfg.min_distance_um)

    def _settings(self) -> dict:
        return {"threshold": round(self.threshold_spin.value(), 4), "min_distance_um": self.distance_spin.value()}

    def config(self) -> SelfTrainConfig:
        return SelfTrainConfig(**{"steps": self.steps_spin.value(), "seed": int(self._seed()), **self._settings(),
                                  **self.extra_config}).validate()

    # ------------------------------------------------------------------ run
    def start(self):
        """Train on the image (or its region) and segment it, or segment it with the chosen saved
        model; returns the worker (None when synchronous or refused)."""
        try:
            layer, image, region, mpp = self._inputs()
            device = self._device()
            folder = self._saved()
            tissue_only = region is None
            if folder is None:
                cfg = self.config()
                job = segment_image_job(image, config=cfg, region=region, mpp=mpp, device=device,
                                        tissue_only=tissue_only)
            else:
                read_config(folder, KIND)
                job = _saved_model_job(folder, self._settings(), image, region, mpp, device, tissue_only)
        except JobError as e:
            notify_error(str(e))
            return None
        self.run_btn.setEnabled(False)
        self.plot.clear()
        self.summary.setText("")
        self._pending = {"layer": layer, "region": region, "trained": folder is None,
                         "model": None if folder is None else folder.name}
        return self.panel.run(with_label_pyramid(job, self._pending), on_done=self._done, on_progress=self._progress,
                              on_cancel=self._reenable, on_error=lambda _m: self._reenable())

    def _reenable(self) -> None:
        self.run_btn.setEnabled(True)

    def _progress(self, p) -> None:
        info = p.info or {}
        if any(k in info for k in LOSS_KEYS):
            self.plot.add(p.done, info)

    def _done(self, out) -> None:
        result, model = out
        pend = self._pending
        layer = pend["layer"]
        self.last_result, self.model = result, model
        if self.labels_layer is not None and self.labels_layer in self.viewer.layers:
            self.viewer.layers.remove(self.labels_layer)
        md = {self._output_key: True, "histoai_store": None if result.store is None else str(result.store)}
        self.labels_layer = add_labels_result(self.viewer, result, layer, f"nuclei labels ({layer.name})", md,
                                              pyramid=pend.get("pyramid"))
        if pend["trained"]:
            self._trained_on = {"source": "napari dock", "image": layer.name,
                                "region": None if pend["region"] is None else [float(v) for v in pend["region"]]}
            losses = self.plot.series.get("loss") or []
            how = f"trained {model.config.steps} steps" + (f", final loss {losses[-1][1]:.3f}" if losses else "")
        else:
            self._trained_on = None  # the model in use is a saved one
            how = f"model {pend['model']}"
        self.summary.setText(f"{result.n_objects} nuclei at {result.mpp_text} ({how})"
                             + "".join(f"\nNote: {n}" for n in result.notes))
        self.save_btn.setEnabled(pend["trained"])
        self.panel.status.setText("Done")
        self._reenable()

    # ------------------------------------------------------------------ save
    def save_model(self, name: Optional[str] = None) -> Optional[Path]:
        """Save the model trained last under ``name`` (default: the name field) in the user's
        models folder, and select it in the list."""
        from ..io.outputs import check_folder_output
        from ..models import check_model_name, user_models_dir

        try:
            if self.model is None or self._trained_on is None:
                raise JobError("train a model first (Train & segment)")
            folder = check_folder_output(user_models_dir() / check_model_name(
                self.name_edit.text() if name is None else name), "the model")
            path = save_selftrained(self.model.net, self.model.config, folder, training=self._trained_on)
        except (JobError, OSError) as e:
            notify_error(str(e))
            return None
        self.refresh_models(select=path.name)
        self.summary.setText(f"model saved as '{path.name}' ({path})")
        return path
