"""AC-Former's dense auxiliary head: its targets put each nucleus in the right cell with the right
offset and class, its peaks decode back to the points, the fusion mixes query and head scores
as documented, a short training on a real crop lowers its loss, and a detector with a head runs
on both inference paths."""

import numpy as np
import pytest
import torch

from napari_histoai.errors import JobError
from napari_histoai.methods.detection.configs import get_config
from napari_histoai.methods.detection.dense_head import STRIDE, dense_peaks, dense_targets, fuse_points

from .test_acformer_train import _crop_folder, _iterate, needs_data


def _targets(points_px, labels, size):
    p = torch.tensor(points_px, dtype=torch.float32)
    return {"points": (p + 0.5) / size, "labels": torch.tensor(labels)}


def test_targets_mark_the_centre_cell_offset_and_class():
    size = 64
    heat, off, cls, centre = dense_targets([_targets([[10.0, 21.0], [40.0, 40.0]], [2, -1], size)], size, size, 4.0, "cpu")
    assert heat.shape == (1, 1, 16, 16) and centre.sum() == 2
    # (10, 21) px -> continuous (10.5, 21.5) -> cell (2, 5), offset (0.625, 0.375) of a cell
    assert heat[0, 0, 2, 5] == 1.0 and centre[0, 2, 5]
    assert torch.allclose(off[0, :, 2, 5], torch.tensor([10.5 / STRIDE - 2, 21.5 / STRIDE - 5]))
    assert cls[0, 2, 5] == 2
    assert cls[0, 10, 10] == -1 and centre[0, 10, 10]  # unknown class: a centre without a class target
    assert 0 < heat[0, 0, 3, 5] < 1 and heat[0, 0, 15, 0] < 1e-3  # Gaussian falls off


def test_class_weights_scale_each_class_in_the_loss():
    """``dense_class_weights``: a wrongly classified nucleus of an up-weighted class costs more,
    one of a down-weighted class less; the heat and offset terms are unchanged."""
    from napari_histoai.methods.detection.dense_head import dense_loss

    torch.manual_seed(0)
    dense = torch.randn(1, 3 + 4, 16, 16)
    t = [_targets([[10.0, 21.0], [40.0, 40.0]], [3, 3], 64)]
    plain = dense_loss(dense, t, 4.0)
    up = dense_loss(dense, t, 4.0, class_weights=[1.0, 1.0, 1.0, 3.0])
    down = dense_loss(dense, t, 4.0, class_weights=[1.0, 1.0, 1.0, 0.0])
    ce = plain - down                                            # the class term alone
    assert ce > 0 and torch.allclose(up, down + 3 * ce, atol=1e-5)
    assert torch.allclose(dense_loss(dense, t, 4.0, class_weights=[5.0, 5.0, 5.0, 1.0]), plain)


def test_pseudo_points_are_not_positives():
    t = _targets([[10.0, 21.0]], [1], 64)
    t["weights"] = torch.tensor([0.4])
    heat, _, cls, centre = dense_targets([t], 64, 64, 4.0, "cpu")
    assert not centre.any() and cls.max() == -1 and abs(float(heat.max()) - 0.4) < 1e-6


def test_peaks_decode_the_targets():
    size, K = 64, 4
    pts = [[10.0, 21.0], [40.0, 33.0], [55.0, 7.0]]
    heat, off, cls, _ = dense_targets([_targets(pts, [0, 3, 1], size)], size, size, 4.0, "cpu")
    logit = torch.logit(heat.clamp(1e-4, 1 - 1e-4))
    cls_logits = torch.nn.functional.one_hot(cls.clamp(min=0), K).permute(0, 3, 1, 2).float() * 10
    dense = torch.cat([logit, torch.logit(off.clamp(1e-4, 1 - 1e-4)), cls_logits], 1)
    (p, q), = dense_peaks(dense, 0.5)
    order = np.argsort(p[:, 0])
    assert np.allclose(p[order], pts, atol=0.01)
    assert q[order].argmax(1).tolist() == [0, 3, 1]


def test_fusion_mixes_paired_scores_and_keeps_lone_points():
    qp = np.array([[10.0, 10.0], [50.0, 50.0]], np.float32)
    qprob = np.array([[0.6, 0.1], [0.4, 0.2]], np.float32)
    dp = np.array([[11.0, 10.0], [80.0, 80.0]], np.float32)
    dprob = np.array([[0.2, 0.6], [0.1, 0.7]], np.float32)
    p, q = fuse_points(qp, qprob, dp, dprob, mix=0.5)
    assert len(p) == 3
    score = q.max(1)
    paired = np.argmin(np.abs(p[:, 0] - 10.5))
    assert abs(p[paired, 0] - 10.5) < 1e-5 and abs(score[paired] - 0.6) < 1e-5  # 0.5*0.6 + 0.5*0.6
    lone_q = np.argmin(np.abs(p[:, 0] - 50))
    assert abs(score[lone_q] - 0.2) < 1e-5 and q[lone_q].argmax() == 0
    lone_d = np.argmin(np.abs(p[:, 0] - 80))
    assert abs(score[lone_d] - 0.35) < 1e-5 and q[lone_d].argmax() == 1
    same, sq = fuse_points(qp, qprob, dp, dprob, mix=0.0)
    assert np.array_equal(same, qp) and np.array_equal(sq, qprob)


def test_detector_with_head_runs_lone_and_windowed():
    from napari_histoai.methods.detection.model import build_model
    from napari_histoai.methods.detection.predict import ACFormerDetector

    torch.manual_seed(0)
    cfg = get_config("tiny", dense_head=True, dense_mix=0.5)
    model = build_model(cfg)
    out = model(torch.rand(1, 3, 128, 128))
    assert out["dense"].shape == (1, 3 + len(cfg.classes), 32, 32)
    img = (np.random.default_rng(0).random((300, 260, 3)) * 255).astype(np.uint8)
    for windowed in (False, True):
        det = ACFormerDetector(model, cfg, threshold=0.0, windowed=windowed)
        (p, c, s), = det.predict_tiles([img])
        assert len(p) and (p[:, 0] < 300).all() and (p[:, 1] < 260).all() and (c < len(cfg.classes)).all()


@needs_data
def test_head_learns_on_a_real_crop_and_starts_from_a_model(tmp_path):
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.train import train_job

    torch.set_num_threads(1)
    folder = _crop_folder(tmp_path)
    base = get_config("tiny", views="crop", crop_size=128, view_size=64, steps=2, global_loss=False, color_jitter=0.0)
    train = load_folder(folder / "images", folder / "points", base.classes)
    list(_iterate(train_job(base, train, tmp_path / "plain", seed=0, eval_every=1000)))
    cfg = base.replace(dense_head=True, steps=40, lr=2e-3)
    dense = [p.info["dense"] for p in _iterate(train_job(cfg, train, tmp_path / "dense", seed=0, eval_every=1000,
                                                       init_from=str(tmp_path / "plain")))]
    assert np.mean(dense[-8:]) < 0.6 * np.mean(dense[:8]), dense
    # dense_only: the head learns, every other weight and statistic stays the plain model's
    from napari_histoai.models import load_checkpoint

    only = [p.info["dense"] for p in _iterate(train_job(cfg.replace(dense_only=True), train, tmp_path / "only", seed=0,
                                                      eval_every=1000, init_from=str(tmp_path / "plain")))]
    assert np.mean(only[-8:]) < 0.8 * np.mean(only[:8]), only
    plain, _ = load_checkpoint(tmp_path / "plain")
    after, _ = load_checkpoint(tmp_path / "only")
    assert all(torch.allclose(plain[k].float(), after[k].float(), atol=1e-6) for k in plain)  # EMA rounding only
    assert any(k.startswith("dense_head.") for k in after)
    with pytest.raises(JobError, match="do not fit"):  # a model of another shape cannot start the run
        list(_iterate(train_job(cfg.replace(d_model=64, gn_groups=8), train, tmp_path / "x", seed=0,
                                init_from=str(tmp_path / "plain"))))


@needs_data
def test_head_with_a_tuned_backbone_changes_the_backbone_and_nothing_else(tmp_path):
    """``dense_backbone_lr_mult`` > 0: the head's loss also trains the backbone (BatchNorm
    statistics kept); the transformer keeps its weights, and a config that would still fuse its
    (now stale) points is refused in one line."""
    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.train import train_job
    from napari_histoai.models import load_checkpoint

    torch.set_num_threads(1)
    folder = _crop_folder(tmp_path)
    base = get_config("tiny", views="crop", crop_size=128, view_size=64, steps=2, global_loss=False, color_jitter=0.0)
    train = load_folder(folder / "images", folder / "points", base.classes)
    list(_iterate(train_job(base, train, tmp_path / "plain", seed=0, eval_every=1000)))
    with pytest.raises(JobError, match="dense_mix"):
        base.replace(dense_head=True, dense_only=True, dense_backbone_lr_mult=0.1)
    cfg = base.replace(dense_head=True, dense_only=True, dense_mix=1.0, dense_backbone_lr_mult=0.5, steps=30, lr=2e-3)
    losses = [p.info["dense"] for p in _iterate(train_job(cfg, train, tmp_path / "tuned", seed=0, eval_every=1000,
                                                        init_from=str(tmp_path / "plain")))]
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6]), losses
    plain, _ = load_checkpoint(tmp_path / "plain")
    after, _ = load_checkpoint(tmp_path / "tuned")
    moved = {k for k in plain if not torch.allclose(plain[k].float(), after[k].float(), atol=1e-6)}
    assert any(k.startswith("backbone.") and k.endswith("weight") for k in moved)
    assert not any(k.endswith(("running_mean", "running_var")) for k in moved)
    assert all(k.startswith("backbone.") for k in moved), sorted(moved)[:5]


def test_head_alone_skips_the_transformer_and_finds_the_fused_points(sample_path, monkeypatch):
    """dense_mix 1 (the fused score is the head's): the bundled model's head peaks on a real H&E
    tile, without running the transformer, are the points the windowed path gives at mix 1."""
    from scipy.spatial import cKDTree

    from napari_histoai.io import open_image
    from napari_histoai.methods.detection.predict import load_acformer

    det = load_acformer("acformer-crc", device="cpu")
    det.cfg = det.cfg.replace(dense_mix=1.0)
    with open_image(sample_path) as im:
        tile = np.ascontiguousarray(np.asarray(im.read_region(256, 256, 768, 768))[..., :3])  # 512 px: the windows cover it exactly
    if det.stain_lut is not None:
        from napari_histoai.methods.stain import apply_lut

        tile = apply_lut(tile, det.stain_lut)
    (pw, qw), = det._windowed([tile])
    monkeypatch.setattr(det.model, "project", lambda *a: (_ for _ in ()).throw(AssertionError("transformer ran")))
    (ph, qh), = det._head_only([tile])
    kw, kh = qw.max(1) >= det.threshold, qh.max(1) >= det.threshold
    assert kh.sum() > 30
    assert abs(int(kw.sum()) - int(kh.sum())) <= max(3, 0.05 * kw.sum())
    d, j = cKDTree(pw[kw]).query(ph[kh])
    assert (d <= 1.0).mean() >= 0.95
    assert (qh[kh].argmax(1) == qw[kw][j].argmax(1))[d <= 1.0].mean() >= 0.95


def _agreement(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    """Fraction of points of a and b paired one-to-one within ``radius`` px (2 x pairs / total)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    d = cdist(a, b)
    r, c = linear_sum_assignment(d)
    return 2 * int((d[r, c] <= radius).sum()) / max(1, len(a) + len(b))


def _fused_copy(tmp_path, mix: float = 0.7, keep_marker: bool = False):
    """The bundled model's folder with its dense head fused with the transformer's points. Its
    backbone was tuned for the head, so the transformer no longer fits it: the copy clears that
    mark (``keep_marker``: keeps it, which a fused model must refuse); its points are poorer, but
    the fused path's numerics and cost are what the tests measure."""
    import json
    import shutil

    from napari_histoai.models import resolve_model

    dest = tmp_path / "acformer-fused"
    shutil.copytree(resolve_model("acformer-crc"), dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["architecture"]["dense_mix"] = mix
    if not keep_marker:
        cfg["architecture"]["dense_backbone_lr_mult"] = 0.0
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_bundled_detector_runs_its_head_alone_at_a_fraction_of_the_fused_time(sample_path, tmp_path):
    """The bundled model detects with its dense head alone (``dense_mix`` 1; its backbone was tuned
    for the head): ``histoai detect`` and ``--fast`` give the same nuclei, a copy told to fuse the
    transformer's points is refused in one line, and the fused path on the same weights costs well
    over 1.6x the time (both timed after a warm-up)."""
    import time

    import pandas as pd

    from napari_histoai.cli import main
    from napari_histoai.engine.inference import infer_array
    from napari_histoai.io import open_image
    from napari_histoai.methods.detection.registry import load_detector

    assert load_detector("acformer-crc", device="cpu").head_only
    region = "0,0,1024,1024"
    assert main(["detect", str(sample_path), "--out", str(tmp_path / "default.csv"), "--region", region]) == 0
    assert main(["detect", str(sample_path), "--out", str(tmp_path / "fast.csv"), "--region", region, "--fast"]) == 0
    default, fast = (pd.read_csv(tmp_path / f"{n}.csv") for n in ("default", "fast"))
    assert len(default) > 100 and default[["y", "x", "class"]].equals(fast[["y", "x", "class"]])
    stale = _fused_copy(tmp_path / "stale", keep_marker=True)
    assert main(["detect", str(sample_path), "--out", str(tmp_path / "x.csv"), "--region", region,
                 "--model", str(stale)]) == 2
    assert not (tmp_path / "x.csv").exists()
    fused = _fused_copy(tmp_path)
    with open_image(sample_path) as im:
        tile = np.ascontiguousarray(np.asarray(im.read_region(0, 0, 1024, 1024))[..., :3])
    seconds = {}
    for model in ("acformer-crc", str(fused)):
        det = load_detector(model, device="cpu")
        infer_array(det, tile[:256, :256], mpp=0.5)
        t = time.perf_counter()
        infer_array(det, tile, mpp=0.5)
        seconds[model] = time.perf_counter() - t
    assert seconds["acformer-crc"] < 0.6 * seconds[str(fused)], seconds


def test_bfloat16_inference_gives_the_float32_points(sample_path, tmp_path):
    """Low-precision convolutions (the default on CPUs with native bfloat16): the detections on a
    real tile are float32's within 1 px and of the same class, with the dense head fused with the
    transformer's points and alone (the bundled default)."""
    from scipy.spatial import cKDTree

    from napari_histoai.engine.devices import inference_dtype
    from napari_histoai.engine.inference import infer_array
    from napari_histoai.io import open_image
    from napari_histoai.methods.detection.predict import load_acformer

    assert inference_dtype("float32", "cpu") is None and inference_dtype("auto", "cuda") is None
    assert inference_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(JobError, match="precision must be one of"):
        inference_dtype("half", "cpu")
    with open_image(sample_path) as im:
        tile = np.ascontiguousarray(np.asarray(im.read_region(0, 0, 768, 768))[..., :3])
    for model in (str(_fused_copy(tmp_path)), "acformer-crc"):  # the fused path, then the head alone
        ref = infer_array(load_acformer(model, "cpu", precision="float32"), tile, mpp=0.5)
        low = infer_array(load_acformer(model, "cpu", precision="bfloat16"), tile, mpp=0.5)
        assert len(ref.points) > 100 and abs(len(low.points) - len(ref.points)) <= 0.02 * len(ref.points)
        d, j = cKDTree(ref.points).query(low.points)
        same = (d <= 1.0) & (ref.class_ids[j] == low.class_ids)
        assert same.mean() >= 0.97, (model, same.mean())


def test_test_time_flips_detect_mirrored_nuclei_in_a_mirrored_tile(sample_path, tmp_path):
    """``--tta`` averages the dense head over the 4 flips of each tile, a group: the nuclei found
    in a mirrored tile (left-right or upside down) are the mirror images of those found in the
    tile, at the same classes. Without flips they are not. ``histoai detect --tta`` runs on a
    real region and finds about as many nuclei as the default."""
    import pandas as pd
    from scipy.spatial import cKDTree

    from napari_histoai.cli import main
    from napari_histoai.io import open_image
    from napari_histoai.methods.detection.registry import load_detector

    with open_image(sample_path) as im:
        tile = np.ascontiguousarray(np.asarray(im.read_region(512, 256, 768, 512))[..., :3])  # 85 nuclei
    plain, tta = load_detector("acformer-crc", device="cpu"), load_detector("acformer-crc", device="cpu", tta=True)
    assert tta.head_only and tta.tta and not plain.tta

    def offsets(det, axis):
        (p, c, _), (pm, cm, _) = det.predict_tiles([tile, np.flip(tile, axis).copy()])
        pm = pm.copy()
        pm[:, axis] = 255 - pm[:, axis]  # back to the tile's frame
        d, j = cKDTree(pm).query(p)
        return len(p), len(pm), d, (c == cm[j]).mean()
    for axis in (0, 1):
        n, nm, d, same = offsets(tta, axis)
        assert n > 30 and n == nm and d.max() < 1e-2 and same == 1.0, (axis, n, nm, d.max(), same)
    n, nm, d, _ = offsets(plain, 1)
    assert n != nm or d.max() > 0.05  # the plain head is not mirror-symmetric: the test can fail

    region = "0,0,512,512"
    assert main(["detect", str(sample_path), "--out", str(tmp_path / "d.csv"), "--region", region]) == 0
    assert main(["detect", str(sample_path), "--out", str(tmp_path / "t.csv"), "--region", region, "--tta"]) == 0
    d, t = pd.read_csv(tmp_path / "d.csv"), pd.read_csv(tmp_path / "t.csv")
    assert len(d) > 50 and abs(len(t) - len(d)) < 0.15 * len(d)
    assert not d[["y", "x"]].equals(t[["y", "x"]])


def test_strip_dense_head_gives_the_base_network_with_its_own_record(tmp_path, monkeypatch, capsys):
    """scripts/strip_dense_head.py: the weights without ``dense_head.*`` and the base network's
    training record (so a head trained on it names the right base in its card); a model whose
    backbone was tuned for its head, or one without a base record, is refused in one line."""
    import runpy
    import sys
    from pathlib import Path

    from napari_histoai.methods.detection.model import build_model
    from napari_histoai.models import load_checkpoint, save_checkpoint

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "strip_dense_head.py")

    def run(*argv):
        monkeypatch.setattr(sys, "argv", ["strip_dense_head.py", *map(str, argv)])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(script, run_name="__main__")
        return e.value.code

    cfg = get_config("tiny", dense_head=True, dense_only=True, dense_mix=1.0)
    state = build_model(cfg).state_dict()
    base = {"steps": 4800, "seed": 0, "device": "cpu", "global_warmup": 3000}
    meta = {"kind": "acformer-detector", "name": "m", "architecture": cfg.to_dict(), "classes": cfg.classes,
            "mpp": cfg.mpp, "training": {"steps": 1650, "base": base}}
    save_checkpoint(tmp_path / "m", state, meta)
    assert run(tmp_path / "m", tmp_path / "base") == 0
    out, c = load_checkpoint(tmp_path / "base")
    assert set(out) == {k for k in state if not k.startswith("dense_head.")} and len(out) < len(state)
    assert c["training"]["steps"] == 4800 and c["architecture"]["dense_head"] is False
    assert c["architecture"]["global_warmup"] == 3000

    meta["architecture"] = cfg.replace(dense_backbone_lr_mult=0.3).to_dict()
    save_checkpoint(tmp_path / "tuned", state, meta)
    assert run(tmp_path / "tuned", tmp_path / "x") == 2
    assert "tuned for its head" in capsys.readouterr().err
    meta["architecture"], meta["training"] = cfg.to_dict(), {"steps": 10}
    save_checkpoint(tmp_path / "plain", state, meta)
    assert run(tmp_path / "plain", tmp_path / "x") == 2
    assert "no base network" in capsys.readouterr().err and not (tmp_path / "x").exists()


@needs_data
def test_refit_keeps_its_final_network_with_the_held_out_runs_settings(tmp_path, monkeypatch):
    """scripts/train_default_detector.py ``--finalize --settings-from``: a refit run (trained on
    every training tile, nothing held out) ships its final EMA weights with the inference settings
    the hold-out picked for the 60-tile run; its card says no selection was made on it; a run that
    stopped before its last step is refused in one line, and nothing is written."""
    import runpy
    import sys
    from pathlib import Path

    from napari_histoai.methods.detection.data import load_folder
    from napari_histoai.methods.detection.train import state_dir, train_job
    from napari_histoai.models import load_checkpoint, read_config, save_checkpoint

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "train_default_detector.py")

    def run(*argv):
        monkeypatch.setattr(sys, "argv", ["train_default_detector.py", *map(str, argv)])
        try:
            return runpy.run_path(script, run_name="__main__")
        except SystemExit as e:
            return e.code

    torch.set_num_threads(1)
    folder = _crop_folder(tmp_path)
    cfg = get_config("tiny", views="crop", crop_size=128, view_size=64, steps=3, global_loss=False, color_jitter=0.0)
    train = load_folder(folder / "images", folder / "points", cfg.classes)
    list(_iterate(train_job(cfg, train, tmp_path / "refit", seed=0, eval_every=1000)))
    ref_state, ref_meta = load_checkpoint(tmp_path / "refit")
    ref_meta["architecture"].update(score_threshold=0.35, min_distance=4.0, tile_size=96, overlap=16,
                                    stain_matched_shift=-0.1)
    save_checkpoint(tmp_path / "held-out-run", ref_state, ref_meta)

    run("--out", tmp_path / "refit", "--finalize", "--settings-from", tmp_path / "held-out-run",
        "--dest", tmp_path / "final")
    sd, meta = load_checkpoint(tmp_path / "final")
    last = torch.load(str(state_dir(tmp_path / "refit") / "last.pt"), map_location="cpu", weights_only=True)
    assert set(sd) == set(last["ema"]) and all(torch.allclose(sd[k].float(), last["ema"][k].float().half().float())
                                               for k in sd)
    a = meta["architecture"]
    assert (a["score_threshold"], a["min_distance"], a["tile_size"], a["overlap"]) == (0.35, 4.0, 96, 16)
    assert "stain_matched_shift" not in a and np.shape(a["stain_target"]) == (2, 3)  # the shift is picked afresh
    assert read_config(tmp_path / "final")["training"]["settings_from"] == str(tmp_path / "held-out-run")
    assert "Selection**: none on this network" in (tmp_path / "final" / "MODEL_CARD.md").read_text()

    last["step"] = 2  # a run interrupted before its last step
    torch.save(last, str(state_dir(tmp_path / "refit") / "last.pt"))
    code = run("--out", tmp_path / "refit", "--finalize", "--settings-from", tmp_path / "held-out-run",
               "--dest", tmp_path / "early")
    assert "stopped at step 2 of 3" in str(code)  # SystemExit's one line
    assert not (tmp_path / "early").exists()
