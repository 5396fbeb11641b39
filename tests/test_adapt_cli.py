"""``histoai train-adapt`` / ``histoai instances`` / ``histoai batch instances`` (CyC-PDAM): outputs
per the CLI contract, with tiny configs on tiny images (CPU); bad training data and wrong models
are one line, exit code 2, and nothing written."""

import csv
import json

import numpy as np
import pytest

from napari_histoai.cli import main

TINY = ["--steps", "2", "--gan-steps", "2", "--crop", "64", "--gan-crop", "32", "--warmup", "1"]
MPP = 0.499  # sample_he.tif's pixel size


def _one_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def he():
    """A 1024 x 1024 RGB H&E array (level 0 of the bundled sample)."""
    from napari_histoai.bundled import sample_path
    from napari_histoai.io import open_image

    with open_image(sample_path()) as img:
        return np.asarray(img.read_region(0, 0, 1024, 1024))[..., :3]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained compact CyC-PDAM model folder (the shapes and files of a real one)."""
    import torch

    from napari_histoai.methods.adaptation import preset, save_adapted_model
    from napari_histoai.methods.adaptation.network import build

    torch.manual_seed(0)
    cfg = preset("compact", steps=2, gan_steps=2, crop=64, gan_crop=32, warmup=1, tile_size=256, overlap=32)
    return save_adapted_model(build(cfg.arch), cfg, tmp_path_factory.mktemp("models") / "tiny-adapt")


@pytest.fixture(scope="module")
def he_crops(tmp_path_factory, he):
    """Two 160 x 192 H&E crops as OME-TIFFs carrying their pixel size."""
    from napari_histoai.io.writers import write_pyramid_ometiff

    d = tmp_path_factory.mktemp("he")
    for i, (y, x) in enumerate([(100, 200), (600, 500)]):
        write_pyramid_ometiff(d / f"crop{i}.ome.tif", he[y:y + 160, x:x + 192], mpp=MPP)
    return d


@pytest.fixture(scope="module")
def targets(tmp_path_factory, he):
    """A target folder: two 256 x 256 H&E PNGs (no pixel size in the files)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("targets")
    Image.fromarray(he[256:512, 256:512]).save(d / "t0.png")
    Image.fromarray(he[512:768, 512:768]).save(d / "t1.png")
    return d


def test_instances_writes_labels_with_the_images_shape_and_pixel_size(he_crops, tiny_model, tmp_path, capsys):
    from napari_histoai.io import open_image

    out = tmp_path / "labels.ome.tif"
    assert main(["instances", str(he_crops / "crop0.ome.tif"), "--model", str(tiny_model), "--out", str(out),
                 "--device", "cpu"]) == 0
    cap = capsys.readouterr()
    s = json.loads(cap.out)
    assert s["out"] == str(out) and s["model"] == "tiny-adapt" and s["shape"] == [160, 192]
    assert s["mpp"] == pytest.approx(MPP) and s["mpp_source"] == "file" and s["n"] >= 0
    assert "nuclei" in cap.err and "Traceback" not in cap.err
    with open_image(out) as lab:
        assert lab.shape[:2] == (160, 192) and lab.mpp == pytest.approx(MPP, rel=1e-3)
        arr = np.asarray(lab.read_region(0, 0, 160, 192))
    assert arr.dtype in (np.uint16, np.uint32) and int(arr.max()) == s["n"]
    assert not list(tmp_path.glob(".*histoai-lock"))
    # a region: labels of the region only; an image without a pixel size: the model's is assumed, and said
    out2 = tmp_path / "r.tif"
    assert main(["instances", str(he_crops / "crop1.ome.tif"), "--model", str(tiny_model), "--out", str(out2),
                 "--region", "10,20,74,100", "--mpp", "0.25", "--device", "cpu"]) == 0
    s2 = json.loads(capsys.readouterr().out)
    assert s2["shape"] == [64, 80] and s2["mpp"] == 0.25 and s2["mpp_source"] == "given"


def test_instances_uses_the_bundled_model_by_default(he_crops, tmp_path, capsys):
    from napari_histoai.bundled import resources_dir
    from napari_histoai.methods.adaptation import BUNDLED
    from napari_histoai.models import WEIGHTS

    if not (resources_dir() / "models" / BUNDLED / WEIGHTS).is_file():
        pytest.skip(f"the bundled {BUNDLED} model is not in this checkout")
    out = tmp_path / "l.tif"
    assert main(["instances", str(he_crops / "crop0.ome.tif"), "--out", str(out), "--device", "cpu"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["model"] == BUNDLED and s["shape"] == [160, 192] and s["n"] > 0 and out.is_file()


def test_train_adapt_on_the_bundled_source_gives_a_model_that_loads(targets, tmp_path, capsys):
    from napari_histoai.methods.adaptation import KIND, load_adapted_model

    out = tmp_path / "adapted"
    assert main(["train-adapt", "--target-images", str(targets), "--out", str(out), *TINY,
                 "--device", "cpu", "--seed", "3"]) == 0
    cap = capsys.readouterr()
    s = json.loads(cap.out)
    assert s["out"] == str(out) and s["sources"] == 10 and s["targets"] == 2 and s["config"] == "compact"
    assert s["steps"] == 2 and s["gan_steps"] == 2 and s["source_nuclei"] >= 20
    assert any("without a pixel size" in n for n in s["notes"]) and "note: " in cap.err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == KIND and cfg["config"]["seed"] == 3 and cfg["training"]["n_targets"] == 2
    assert cfg["training"]["bundled_source"] is True
    assert set(cfg["metrics"]["final_losses"]) == {"cyclegan", "maskrcnn"}
    seg = load_adapted_model(out)
    assert seg.mpp == 0.5 and hasattr(seg, "segment_tiles")
    assert [p.name for p in tmp_path.iterdir() if p.name != "user_models"] == ["adapted"]  # no temporaries


def test_a_cancelled_training_leaves_the_previous_model_untouched(targets, tiny_model, tmp_path):
    import shutil

    from napari_histoai.errors import CancelFlag, Cancelled
    from napari_histoai.methods.adaptation import preset
    from napari_histoai.tasks import train_adapt

    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    cancel, seen = CancelFlag(), []

    def on_progress(p):
        seen.append(p)
        cancel.set()

    cfg = preset("compact", steps=2, gan_steps=2, crop=64, gan_crop=32, warmup=1)
    with pytest.raises(Cancelled):
        train_adapt(None, None, targets, out, config=cfg, device="cpu", checkpoint_dir=tmp_path / "ckpt",
                    on_progress=on_progress, cancel=cancel)
    assert seen and {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert {p.name for p in tmp_path.iterdir()} - {"user_models", "ckpt"} == {"model"}  # no half-saved model
    with pytest.raises(Exception, match="--resume must be another folder"):
        train_adapt(None, None, targets, out, config=cfg, device="cpu", checkpoint_dir=out)


def _fluo(n=3, size=64, rng=None):
    """(image uint8, instance mask uint16) with ``n`` bright square nuclei."""
    img = np.full((size, size), 10, np.uint8)
    mask = np.zeros((size, size), np.uint16)
    for i in range(n):
        y, x = 6 + 18 * i, 8 + 17 * i
        img[y:y + 9, x:x + 9] = 200
        mask[y:y + 9, x:x + 9] = i + 1
    return img, mask


def _source(tmp_path, problem):
    import tifffile
    from PIL import Image

    im_dir, m_dir = tmp_path / "src_images", tmp_path / "src_masks"
    im_dir.mkdir()
    m_dir.mkdir()
    for name in ("a", "b"):
        img, mask = _fluo()
        if name == "b" and problem == "no mask":
            Image.fromarray(img).save(im_dir / f"{name}.png")
            continue
        if name == "b" and problem == "mask size":
            mask = mask[:48]
        if name == "b" and problem == "binary mask":
            mask = (mask > 0).astype(np.uint8)
        if name == "b" and problem == "float mask":
            mask = mask.astype(np.float32)
        if name == "b" and problem == "colour":
            img = np.stack([img, img // 2, np.zeros_like(img)], -1)
        Image.fromarray(img).save(im_dir / f"{name}.png")
        tifffile.imwrite(m_dir / f"{name}.tif", mask)
    return ["--source-images", str(im_dir), "--source-masks", str(m_dir)]


@pytest.mark.parametrize("problem,match", [
    ("no mask", "have no mask"),
    ("mask size", "must have the same size"),
    ("binary mask", "binary (0/1) with several objects"),
    ("float mask", "instance masks hold integer ids"),
    ("colour", "is colour RGB"),
    ("one source folder", "both --source-images and --source-masks"),
    ("dark target", "does not look like H&E"),
])
def test_bad_training_data_is_one_line_and_writes_nothing(targets, tmp_path, capsys, problem, match):
    from PIL import Image

    tgt = targets
    if problem == "dark target":
        tgt = tmp_path / "dark"
        tgt.mkdir()
        Image.fromarray(np.full((128, 128, 3), 60, np.uint8)).save(tgt / "grey.png")
        src = []
    elif problem == "one source folder":
        src = _source(tmp_path, "none")[:2]
    else:
        src = _source(tmp_path, problem)
    out = tmp_path / "model"
    assert main(["train-adapt", *src, "--target-images", str(tgt), "--out", str(out), *TINY, "--device", "cpu"]) == 2
    line = _one_line(capsys)
    assert line.startswith("histoai train-adapt: error:") and match in line, line
    assert not out.exists()


def test_bad_options_and_outputs_are_refused_before_any_work(targets, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train-adapt", "--target-images", str(targets), "--out", str(out), "--crop", "100"]) == 2
    assert "--crop" in _one_line(capsys)
    assert main(["train-adapt", "--target-images", str(targets), "--out", str(out), "--steps", "0"]) == 2
    assert "--steps" in _one_line(capsys)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.docx").write_text("x")
    assert main(["train-adapt", "--target-images", str(targets), "--out", str(busy), *TINY]) == 2
    assert "other files in it" in _one_line(capsys)
    assert main(["train-adapt", "--target-images", str(tmp_path / "nowhere"), "--out", str(out), *TINY]) == 2
    assert "does not exist" in _one_line(capsys)
    assert not out.exists() and [p.name for p in busy.iterdir()] == ["thesis.docx"]


def test_instances_with_a_wrong_model_or_output_is_one_line_and_writes_nothing(he_crops, tiny_model, tmp_path,
                                                                                capsys):
    img = str(he_crops / "crop0.ome.tif")
    out = tmp_path / "l.tif"
    assert main(["instances", img, "--model", "acformer-crc", "--out", str(out), "--device", "cpu"]) == 2
    line = _one_line(capsys)
    assert "acformer-detector" in line and "cycpdam-segmenter" in line
    assert main(["instances", img, "--model", str(tiny_model), "--out", str(tmp_path / "l.png")]) == 2
    assert "must end with" in _one_line(capsys)
    assert main(["instances", img, "--model", str(tiny_model), "--out", str(out), "--region", "500,500,600,600",
                 "--device", "cpu"]) == 2
    assert "outside the image" in _one_line(capsys)
    grey = tmp_path / "grey.tif"
    import tifffile

    tifffile.imwrite(grey, np.zeros((64, 64), np.uint8))
    assert main(["instances", str(grey), "--model", str(tiny_model), "--out", str(out), "--device", "cpu"]) == 2
    assert "needs an RGB H&E image" in _one_line(capsys)
    assert {p.name for p in tmp_path.iterdir() if p.name != "user_models"} == {"grey.tif"}


def test_batch_instances_writes_one_labels_file_and_record_per_image(he_crops, tiny_model, tmp_path, capsys):
    from napari_histoai.batch import DEFAULT_MODELS
    from napari_histoai.methods.adaptation import BUNDLED

    assert DEFAULT_MODELS["instances"] == BUNDLED
    out = tmp_path / "results"
    args = ["batch", "instances", str(he_crops), "--out", str(out), "--model", str(tiny_model), "--workers", "1",
            "--device", "cpu"]
    assert main(args) == 0
    assert "2 done, 0 skipped (done before), 0 failed" in capsys.readouterr().err
    assert {p.name for p in out.glob("*.ome.tif")} == {"crop0.ome.tif", "crop1.ome.tif"}
    with open(out / "summary.csv", newline="") as fh:
        rows = {r["image"].split("/")[-1]: r for r in csv.DictReader(fh)}
    assert [rows[k]["status"] for k in ("crop0.ome.tif", "crop1.ome.tif")] == ["done", "done"]
    recs = [json.loads((out / "records" / f"crop{i}.ome.tif.json").read_text()) for i in (0, 1)]
    assert all(r["task"] == "instances" and r["status"] == "done" and r["model"] == str(tiny_model) for r in recs)
    assert all(r["model_id"].startswith("sha256:") and r["result"]["shape"] == [160, 192] for r in recs)
    # one worker: the model is loaded once and lent to the second file
    assert sum(r["model_cache"]["loaded"] for r in recs) == 1 and sum(r["model_cache"]["reused"] for r in recs) == 1
    # resume: nothing to do
    assert main(args) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().err
