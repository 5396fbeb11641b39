"""Mixed-supervision fine-tuning on a tiny AC-Former: data, pseudo labels, EM job, cancel, CLI."""

import numpy as np
import pytest
import torch

from napari_histoai.engine.jobs import run_job
from napari_histoai.errors import CancelFlag, Cancelled
from napari_histoai.methods.detection.finetune.data import (
    crop_at,
    ignore_mask,
    make_mixed_image,
    split_holdout,
    targets_of,
)
from napari_histoai.methods.detection.finetune.train import (
    RETUNE_STEPS,
    MixedConfig,
    mixed_train_job,
    pseudo_label,
)


def tiny_model(name="tiny-start", seed=0):
    """A randomly initialised tiny AC-Former saved as a user model (tests' temporary folder)."""
    from napari_histoai.methods.detection.configs import get_config
    from napari_histoai.methods.detection.model import build_model
    from napari_histoai.models import save_checkpoint, user_models_dir

    cfg = get_config("tiny", crop_size=96, view_size=64, tile_size=128, score_threshold=0.3)
    torch.manual_seed(seed)
    model = build_model(cfg)
    return save_checkpoint(user_models_dir() / name, model.state_dict(),
                           {"kind": "acformer-detector", "name": name, "architecture": cfg.to_dict(),
                            "classes": cfg.classes, "mpp": cfg.mpp})


def synthetic(seed=0, size=192):
    """Dark round 'nuclei' on pink: classes by size; reviewed = left half, no-target = a corner."""
    rng = np.random.default_rng(seed)
    im = np.full((size, size, 3), (235, 190, 215), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    pts, cls = [], []
    for _ in range(40):
        y, x = rng.uniform(8, size - 8, 2)
        if min((abs(y - a) + abs(x - b)) for a, b in pts) < 14 if pts else False:
            continue
        r = 4 if len(pts) % 2 else 6
        im[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = (70, 40, 120)
        pts.append((y, x)), cls.append("inflammatory" if r == 4 else "epithelial")
    pts = np.array(pts)
    cls = [c if i % 5 else "unlabeled" for i, c in enumerate(cls)]
    reviewed = [np.array([[0, 0], [0, size // 2], [size, size // 2], [size, 0]])]
    no_target = [np.array([[size - 30, size - 30], [size - 30, size], [size, size], [size, size - 30]])]
    return im, pts, cls, reviewed, no_target


def item(classes, seed=0):
    im, pts, cls, rev, neg = synthetic(seed)
    src = ["user" if i % 7 == 0 else "model" for i in range(len(pts))]
    return make_mixed_image("syn", im, pts, cls, classes, rev, neg, sources=src), pts


CLASSES = ["epithelial", "inflammatory", "fibroblast", "others"]


def test_fine_points_regions_holdout_and_crops():
    it, pts = item(CLASSES)
    assert len(it.points) == (pts[:, 1] < 96).sum() and (it.labels == -1).any()
    assert it.extra_points.shape[1] == 2 and (it.extra_points[:, 1] >= 96).all()  # user points outside
    assert it.negative.sum() == 30 * 30 and not (it.negative & it.reviewed).any()
    blocks = split_holdout(it, 0.5, block=48, seed=0)
    assert len(blocks) == 4 and not any(it.reviewed[y0:y1, x0:x1].any() for y0, x0, y1, x1 in blocks)
    # pseudo labels: only in the unreviewed, non-negative, non-held-out area; weights per V
    yx = np.array([[10, 10], [50, 150], [60, 150], [180, 180], [100, 120]], float)
    stats = pseudo_label(it, yx, np.array([0, 1, 2, 1, 0]), np.array([0.9, 0.5, 0.05, 0.9, 0.001]),
                         MixedConfig(T=0.4, V=4.0), patch=64)
    assert stats["n_pseudo"] == 2 and np.allclose(sorted(it.pseudo_weights), [0.2, 1.0])
    assert not (it.pseudo & (it.reviewed | it.negative)).any()
    p, lab, w = targets_of(it)
    assert len(p) == len(it.points) + len(it.extra_points) + 2 and w.min() == pytest.approx(0.2)
    # kept pseudo patches: background for unmatched proposals only when trusted as complete
    assert not (ignore_mask(it, pseudo_negatives=True) & it.pseudo).any()
    assert (ignore_mask(it, pseudo_negatives=False) & it.pseudo).sum() == it.pseudo.sum() > 0
    assert not (ignore_mask(it, pseudo_negatives=False) & (it.reviewed | it.negative)).any()
    c, pn, l2, w2, ig = crop_at(it, 0, 96, 96, np.random.default_rng(0), 0.0)
    assert c.shape == (3, 96, 96) and ig.shape == (96, 96) and len(pn) == len(l2) == len(w2)
    assert ig.any() and not ig.all()


def test_em_rounds_save_a_model_and_cancel_saves_nothing(tmp_path):
    from napari_histoai.models import list_models

    torch.set_num_threads(2)
    tiny_model()
    it, _ = item(CLASSES)
    m = MixedConfig(rounds=2, steps=3, pseudo=True, T=0.0, pseudo_floor=0.0, val_fraction=0.3, views="crop", holdout_block=48)
    seen = []
    res = run_job(mixed_train_job("tiny-start", [it], tmp_path / "m1", m, seed=0), seen.append)
    losses = [p.info["loss"] for p in seen if "loss" in p.info]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert [r["round"] for r in res["rounds"]] == [1, 2] and res["val"] and "f_d" in res["val_before"]
    assert res["rounds"][0]["pseudo"]["syn"]["n_pseudo"] > 0
    assert (tmp_path / "m1" / "config.json").is_file()
    from napari_histoai.models import read_config

    cfg = read_config(tmp_path / "m1")
    assert cfg["training"]["start_model"] == "tiny-start" and cfg["metrics"]["selected_round"] in (0, 1, 2)
    # cancel in the middle: no folder, no half-saved model
    flag, n = CancelFlag(), [0]

    def stop(p):
        n[0] += "loss" in p.info
        if n[0] >= 2:
            flag.set()

    it2, _ = item(CLASSES)
    with pytest.raises(Cancelled):
        run_job(mixed_train_job("tiny-start", [it2], tmp_path / "m2", m, cancel=flag), stop, flag)
    assert not (tmp_path / "m2").exists() and "m2" not in list_models()


def test_cli_trains_on_a_project_folder(tmp_path, capsys):
    import json

    import tifffile

    from napari_histoai.cli import main
    from napari_histoai.models import list_models
    from napari_histoai.project import Project, ProjectPoints

    torch.set_num_threads(2)
    tiny_model()
    im, pts, cls, rev, neg = synthetic(1)
    path = tmp_path / "syn.tif"
    tifffile.imwrite(path, im, photometric="rgb")
    prj = Project.for_image(path)
    prj.save(ProjectPoints(pts, cls, np.ones(len(pts)), ["user"] * len(pts)), rev, neg, model="tiny-start")
    args = ["train-detector", "--project", str(prj.root), "--out", "from-cli", "--rounds", "1", "--steps", "2",
            "--views", "crop", "--mix-ratio", "2:1:7", "--device", "cpu"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == 2 and out["start_model"] == "tiny-start" and "from-cli" in list_models()
    assert Project(prj.root).meta["models"][-1]["name"] == "from-cli"
    assert out["threshold"] == 0.3  # the tiny start model's own, by default
    assert main(args[:4] + ["retuned"] + args[5:] + ["--retune-threshold"]) == 0
    retuned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert retuned["threshold"] in (0.25, 0.3, 0.35, 0.4, 0.45)  # picked around the start's 0.3
    assert main(["train-detector", "--project", str(tmp_path / "nope"), "--out", "x"]) == 2
    assert main(args[:4] + ["bad name!"] + args[5:]) == 2
    assert main(args[:4] + ["other"] + args[5:12] + ["2:1"] + args[13:]) == 2  # a bad --mix-ratio


def test_default_is_confident_pseudo_labels_and_can_be_turned_off(tmp_path):
    """The default (the dock's and the CLI's) is what the simulated user measured best from the
    bundled model: corrections, no-target regions and confident pseudo labels (T 0.4) at 4:1:1;
    ``pseudo=False`` trains on the corrections alone (no pseudo labels from the start model)."""
    torch.set_num_threads(2)
    tiny_model()
    m = MixedConfig(rounds=1, steps=2, val_fraction=0.3, views="crop", holdout_block=48)
    assert m.pseudo and m.T == 0.4 and tuple(m.ratio) == (4, 1, 1) and m.global_loss is False
    it, _ = item(CLASSES)
    m = MixedConfig(rounds=1, steps=2, val_fraction=0.3, views="crop", holdout_block=48, pseudo=False)
    res = run_job(mixed_train_job("tiny-start", [it], tmp_path / "m0", m, seed=0))
    assert res["rounds"][0]["pseudo"] == {} and res["T"] == 0.4
    # T None (the dock's "model's threshold") is the start model's operating threshold, not the default
    from napari_histoai.models import read_config, resolve_model

    m0 = MixedConfig(rounds=1, steps=1, val_fraction=0.3, views="crop", holdout_block=48, T=None)
    res = run_job(mixed_train_job("tiny-start", [item(CLASSES)[0]], tmp_path / "m1", m0, seed=0))
    assert res["T"] == read_config(resolve_model("tiny-start"))["architecture"]["score_threshold"] != 0.4


def test_corrections_train_a_head_trained_alone_alone_unless_asked(tmp_path):
    """A model whose dense head was trained on the frozen network (the bundled one) learns from
    corrections the same way: the head's weights move, every other weight stays; with
    ``dense_only=False`` the whole network trains."""
    from napari_histoai.methods.detection.configs import get_config
    from napari_histoai.methods.detection.model import build_model
    from napari_histoai.models import load_checkpoint, save_checkpoint, user_models_dir

    torch.set_num_threads(2)
    cfg = get_config("tiny", crop_size=96, view_size=64, tile_size=128, score_threshold=0.3,
                     dense_head=True, dense_only=True, dense_mix=0.7)
    torch.manual_seed(0)
    start = build_model(cfg).state_dict()
    save_checkpoint(user_models_dir() / "tiny-dense", start, {"kind": "acformer-detector", "name": "tiny-dense",
                                                             "architecture": cfg.to_dict(), "classes": cfg.classes,
                                                             "mpp": cfg.mpp})
    it, _ = item(CLASSES)
    for dense_only, out in ((None, "head"), (False, "all")):
        # no hold-out: the trained round is saved whatever it scores
        m = MixedConfig(rounds=1, steps=3, val_fraction=0.0, views="crop", holdout_block=48, dense_only=dense_only)
        run_job(mixed_train_job("tiny-dense", [it], tmp_path / out, m, seed=0))
        state, _ = load_checkpoint(tmp_path / out)
        moved = {k for k, v in state.items() if v.is_floating_point() and not torch.allclose(v.float(), start[k].float())}
        assert any(k.startswith("dense_head.") for k in moved)
        others = {k for k in moved if not k.startswith("dense_head.")}
        assert (not others) if dense_only is None else others


def test_a_round_that_loses_on_the_held_out_corrections_is_not_saved(data_dir, tmp_path):
    """The bundled model on a real CRCHistoPhenotypes image whose left half is reviewed: a
    wrecking learning rate makes the trained round score below the start model on the held-out
    reviewed blocks, so the saved model keeps the start weights (round 0) and says so."""
    from PIL import Image

    from napari_histoai.io.points import read_points_csv
    from napari_histoai.methods.detection.configs import CLASSES as ALL
    from napari_histoai.models import load_checkpoint, read_config, resolve_model

    torch.set_num_threads(2)
    d = data_dir / "crchisto" / "val"
    im = np.asarray(Image.open(d / "images" / "img16.png").convert("RGB"))
    t = read_points_csv(d / "points" / "img16.csv")
    h, w = im.shape[:2]
    it = make_mixed_image("img16", im, t.yx, list(t.classes), ALL,
                          [np.array([[0, 0], [0, w // 2], [h, w // 2], [h, 0]])], [])
    m = MixedConfig(rounds=1, steps=3, lr=1.0, val_fraction=0.3, holdout_block=96, pseudo=False, negatives=False)
    res = run_job(mixed_train_job("acformer-crc", [it], tmp_path / "wrecked", m, seed=0))
    assert res["val_before"]["f_d"] > 0.3 and res["rounds"][0]["val"]["f_d"] < res["val_before"]["f_d"]
    assert res["selected_round"] == 0 and res["val"]["f_d"] == res["val_before"]["f_d"]
    assert res["threshold"] == res["threshold_before"]
    start, _ = load_checkpoint(resolve_model("acformer-crc"))
    saved, _ = load_checkpoint(tmp_path / "wrecked")
    assert all(torch.equal(saved[k].float(), start[k].float()) for k in start)
    assert read_config(tmp_path / "wrecked")["metrics"]["selected_round"] == 0
    # the start model kept as it is, with its threshold shift for images outside its training stains
    assert read_config(tmp_path / "wrecked")["architecture"]["stain_matched_shift"] == _bundled_shift()


def _val_item(data_dir, name="img16"):
    from PIL import Image

    from napari_histoai.io.points import read_points_csv
    from napari_histoai.methods.detection.configs import CLASSES as ALL

    d = data_dir / "crchisto" / "val"
    im = np.asarray(Image.open(d / "images" / f"{name}.png").convert("RGB"))
    t = read_points_csv(d / "points" / f"{name}.csv")
    h, w = im.shape[:2]
    return make_mixed_image(name, im, t.yx, list(t.classes), ALL, [np.array([[0, 0], [0, w], [h, w], [h, 0]])], [])


def _bundled_shift() -> float:
    """The bundled detector's matched-stain threshold shift (picked by scripts/pick_matched_shift.py)."""
    from napari_histoai.models import read_config, resolve_model

    shift = read_config(resolve_model("acformer-crc"))["architecture"]["stain_matched_shift"]
    assert shift < 0
    return shift


def test_the_score_threshold_is_re_picked_on_the_held_out_reviewed_blocks(data_dir, tmp_path):
    """With ``--retune-threshold``, a start model operating far too low (0.10: many false nuclei)
    gets its threshold raised from the held-out reviewed blocks, with a better held-out F_d, and
    the saved model detects at it; by default the threshold stays."""
    from napari_histoai.models import load_checkpoint, read_config, resolve_model, save_checkpoint

    torch.set_num_threads(2)
    state, cfg = load_checkpoint(resolve_model("acformer-crc"))
    cfg["architecture"]["score_threshold"] = 0.10
    save_checkpoint(tmp_path / "low", state, cfg)
    m = dict(rounds=1, steps=1, lr=1e-9, val_fraction=0.3, holdout_block=96, pseudo=False, negatives=False)
    res = run_job(mixed_train_job(str(tmp_path / "low"), [_val_item(data_dir)], tmp_path / "raised",
                                  MixedConfig(**m, threshold_steps=RETUNE_STEPS), seed=0))
    assert res["threshold_before"] == 0.10 and res["threshold"] > 0.10
    assert res["val"]["threshold"] == res["threshold"] and res["val"]["f_d"] > res["val_before"]["f_d"] + 0.01
    assert read_config(tmp_path / "raised")["architecture"]["score_threshold"] == res["threshold"]
    kept = run_job(mixed_train_job(str(tmp_path / "low"), [_val_item(data_dir)], tmp_path / "kept",
                                   MixedConfig(**m), seed=0))
    assert kept["threshold"] == 0.10 and read_config(tmp_path / "kept")["architecture"]["score_threshold"] == 0.10
    for run, folder in ((res, "raised"), (kept, "kept")):  # a trained round drops the matched-stain shift
        shift = read_config(tmp_path / folder)["architecture"]["stain_matched_shift"]
        assert shift == (_bundled_shift() if run["selected_round"] == 0 else 0.0)


def test_a_trained_round_is_validated_and_saved_without_the_matched_stain_shift(data_dir, tmp_path):
    """On an image outside the training stains (a MoNuSeg tile, halved to 0.5 µm/px), held-out
    blocks of matched images are scored at threshold + shift (as the start model detects them);
    a trained round is saved without the shift, the start model (round 0) with it."""
    from PIL import Image

    from napari_histoai.io.points import read_points_csv
    from napari_histoai.methods.detection.configs import CLASSES as ALL
    from napari_histoai.methods.detection.finetune.train import validate
    from napari_histoai.methods.detection.predict import load_acformer
    from napari_histoai.models import read_config

    torch.set_num_threads(2)
    d = data_dir / "monuseg" / "train"
    name = sorted(p.stem for p in (d / "points").glob("*.csv"))[0]
    img = Image.open(d / "images" / f"{name}.png").convert("RGB")
    im = np.asarray(img.resize((img.width // 2, img.height // 2), Image.Resampling.BOX))
    t = read_points_csv(d / "points" / f"{name}.csv")
    h, w = im.shape[:2]

    def item():
        return make_mixed_image(name, im, (t.yx + 0.5) / 2 - 0.5, list(t.classes), ALL,
                                [np.array([[0, 0], [0, w], [h, w], [h, 0]])], [])

    m = MixedConfig(rounds=1, steps=20, val_fraction=0.3, holdout_block=96, pseudo=False, negatives=False)
    it = item()
    res = run_job(mixed_train_job("acformer-crc", [it], tmp_path / "mon", m, seed=0))
    assert it.matched  # another lab's stain: matched once by the job
    det = load_acformer("acformer-crc", device="cpu")
    det.stain_target = None  # the job's items are matched already
    shifted, plain = validate(det, [it], matched_shift=_bundled_shift()), validate(det, [it])
    assert res["val_before"]["f_d"] == shifted["f_d"] != plain["f_d"]
    it.matched = False
    assert validate(det, [it], matched_shift=_bundled_shift())["f_d"] == plain["f_d"]
    shift = read_config(tmp_path / "mon")["architecture"]["stain_matched_shift"]
    assert shift == (_bundled_shift() if res["selected_round"] == 0 else 0.0)
