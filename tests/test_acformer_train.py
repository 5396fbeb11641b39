"""A short training run on a real CRCHistoPhenotypes crop: the loss falls clearly; the CLI
trains, saves and reloads a model."""


import numpy as np
import pytest
import torch

from napari_histoai.methods.detection.configs import get_config
from napari_histoai.methods.detection.data import load_folder, random_crop

from .conftest import DATA as _DATA

DATA = _DATA / "crchisto" / "train"
needs_data = pytest.mark.skipif(not (DATA / "images" / "img1.png").is_file(), reason="shared data not available")


def _crop_folder(tmp_path, n=1, size=128):
    """Write real crops (image + points CSV) to a temporary folder."""
    from PIL import Image

    items = load_folder(DATA / "images", DATA / "points", get_config("tiny").classes)
    items = sorted(items, key=lambda it: -len(it.points))[:n]  # the most crowded tiles
    (tmp_path / "images").mkdir()
    (tmp_path / "points").mkdir()
    for it in items:
        Image.fromarray(it.image[100:100 + size, 100:100 + size]).save(tmp_path / "images" / f"{it.name}.png")
        p = it.points - 100
        k = ((p >= 0) & (p < size)).all(1)
        names = get_config("tiny").classes + ["unlabeled"]
        rows = ["y,x,class"] + [f"{y:.2f},{x:.2f},{names[c]}" for (y, x), c in zip(p[k], it.labels[k])]
        (tmp_path / "points" / f"{it.name}.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_random_crop_moves_points_with_pixels():
    from napari_histoai.methods.detection.data import PointImage

    im = np.zeros((40, 50, 3), np.uint8)
    im[10, 30] = 255
    item = PointImage("x", im, np.array([[10.0, 30.0]], np.float32), np.array([2]))
    for seed in range(8):
        c, p, lab = random_crop(item, 32, np.random.default_rng(seed), jitter=0.0)
        if len(p):
            y, x = np.unravel_index(c[0].argmax(), c[0].shape)
            assert np.allclose(p[0] * 32 - 0.5, [y, x]) and lab.tolist() == [2]


@needs_data
def test_stain_jitter_changes_the_stains_not_the_layout():
    """HED stain jitter (hed_jitter): off is the identity; on, a real H&E crop keeps its layout
    (the same pixels stay darkest) while the haematoxylin amount of its nuclei changes by a few
    per cent (within 15% at strength 0.05), and white background stays near white."""
    from PIL import Image
    from skimage.color import hed_from_rgb

    from napari_histoai.methods.detection.data import hed_jitter

    im = np.asarray(Image.open(DATA / "images" / "img1.png").convert("RGB"))[:128, :128].astype(np.float32) / 255
    assert np.array_equal(hed_jitter(im, np.random.default_rng(0), 0.0), im)

    def haematoxylin(x):
        return (-np.log((x.astype(np.float64) * 255 + 1) / 256).reshape(-1, 3) @ hed_from_rgb)[:, 0]

    h0 = haematoxylin(im)
    nuclei = h0 > np.percentile(h0, 95)
    changed = 0
    for seed in range(6):
        out = hed_jitter(im, np.random.default_rng(seed), 0.05)
        assert out.shape == im.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        h1 = haematoxylin(out)
        assert np.corrcoef(h0, h1)[0, 1] > 0.95  # the same nuclei, the same places
        ratio = h1[nuclei].mean() / h0[nuclei].mean()
        assert 0.85 < ratio < 1.15, ratio
        changed += abs(ratio - 1) > 0.005
        assert np.abs(hed_jitter(np.ones((4, 4, 3), np.float32), np.random.default_rng(seed), 0.05) - 1).max() < 0.2
    assert changed >= 4  # it does jitter
    c1, _, _ = random_crop(_point_image(im), 64, np.random.default_rng(3), jitter=0.0, hed=0.05)
    c0, _, _ = random_crop(_point_image(im), 64, np.random.default_rng(3), jitter=0.0)
    assert c1.shape == c0.shape and not np.allclose(c1, c0)


def _point_image(im):
    from napari_histoai.methods.detection.data import PointImage

    return PointImage("x", (im * 255).astype(np.uint8), np.zeros((0, 2), np.float32), np.zeros(0, np.int64))


@needs_data
def test_loss_falls_on_a_real_crop(tmp_path):
    from napari_histoai.methods.detection.train import train_job

    torch.set_num_threads(1)  # small tensors: one thread is faster and kind to a shared machine
    folder = _crop_folder(tmp_path)
    cfg = get_config("tiny", views="aat", crop_size=128, view_size=64, steps=40, lr=2e-3, global_warmup=20,
                     teacher_threshold=0.05, color_jitter=0.0)
    train = load_folder(folder / "images", folder / "points", cfg.classes)
    losses, glob = [], []
    for p in _iterate(train_job(cfg, train, tmp_path / "model", seed=0, eval_every=1000)):
        losses.append(p.info["class"] + p.info["point"])
        glob.append("global" in p.info)
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses
    assert any(glob) and not glob[0]
    assert (tmp_path / "model" / "config.json").is_file()


@needs_data
def test_a_run_saved_before_a_new_config_field_resumes_and_a_changed_one_is_named(tmp_path):
    """A run saved before a config field existed (here hed_jitter) resumes when the field is at its
    default; a run resumed with a changed setting is refused in one line naming the field."""
    from napari_histoai.errors import JobError
    from napari_histoai.methods.detection.train import state_dir, train_job

    torch.set_num_threads(1)
    folder = _crop_folder(tmp_path)
    cfg = get_config("tiny", views="crop", crop_size=96, steps=2, global_loss=False, color_jitter=0.0)
    train = load_folder(folder / "images", folder / "points", cfg.classes)
    out = tmp_path / "run"
    list(_iterate(train_job(cfg, train, out, seed=0, eval_every=1000, ckpt_every=1)))
    last = state_dir(out) / "last.pt"
    st = torch.load(str(last), map_location="cpu", weights_only=True)
    del st["architecture"]["hed_jitter"]  # as saved before the field was added
    torch.save(st, str(last))
    steps = [p.done for p in _iterate(train_job(cfg.replace(steps=3), train, out, seed=0, eval_every=1000,
                                                 resume=True))]
    assert steps and steps[-1] == 3 and 1 not in steps  # resumed after step 2
    with pytest.raises(JobError, match=r"another configuration \(hed_jitter\)"):
        list(_iterate(train_job(cfg.replace(steps=4, hed_jitter=0.05), train, out, seed=0, resume=True)))


def _iterate(job):
    try:
        while True:
            yield next(job)
    except StopIteration:
        return


@needs_data
def test_cli_train_resume_and_load(tmp_path):
    from napari_histoai.cli import main
    from napari_histoai.methods.detection.predict import load_acformer

    folder = _crop_folder(tmp_path, n=2)
    out = tmp_path / "det"
    args = ["train-detector", "--images", str(folder / "images"), "--points", str(folder / "points"),
            "--out", str(out), "--config", "tiny", "--steps", "4", "--views", "crop", "--global-loss", "off",
            "--fusestyle-partner", "random", "--val-images", str(folder / "images"), "--val-points",
            str(folder / "points"), "--eval-every", "2", "--device", "cpu"]
    assert main(args) == 0
    assert main(args[:10] + ["6"] + args[11:] + ["--resume"]) == 0
    det = load_acformer(out, device="cpu")
    assert det.cfg.views == "crop" and det.cfg.fusestyle_partner == "random"
    (p, c, s), = det.predict_tiles([np.full((96, 96, 3), 180, np.uint8)])
    assert p.shape[1] == 2
    assert main(["train-detector", "--images", str(tmp_path / "nope"), "--points", str(folder / "points"),
                 "--out", str(out), "--config", "tiny"]) == 2


@needs_data
def test_cli_stain_jitter_is_stored_and_bad_values_are_one_line(tmp_path, capsys):
    from napari_histoai.cli import main
    from napari_histoai.methods.detection.predict import load_acformer

    folder = _crop_folder(tmp_path)
    out = tmp_path / "det"
    args = ["train-detector", "--images", str(folder / "images"), "--points", str(folder / "points"), "--out",
            str(out), "--config", "tiny", "--steps", "2", "--views", "crop", "--global-loss", "off", "--device", "cpu"]
    assert main(args + ["--stain-jitter", "0.05"]) == 0
    assert load_acformer(out, device="cpu").cfg.hed_jitter == 0.05
    capsys.readouterr()
    assert main(args + ["--stain-jitter", "-0.1"]) == 2
    assert "--stain-jitter: must be >= 0" in capsys.readouterr().err
    assert main(["train-detector", "--project", str(tmp_path / "p.histoai"), "--out", str(tmp_path / "m"),
                 "--stain-jitter", "0.05"]) == 2
    assert "--stain-jitter is for training from --images/--points" in capsys.readouterr().err
