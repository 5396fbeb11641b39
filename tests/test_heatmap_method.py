"""The heatmap method end to end on small slides built from real tissue tiles: alignment of the
written heatmap in µm, a training run that lowers its loss, Cancel keeping the previous model,
the commands and their one-line errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from napari_histoai.engine.jobs import run_job
from napari_histoai.errors import CancelFlag, Cancelled

TUMOUR_BOX = (352, 352, 576, 576)  # level-0 px (y0, x0, y1, x1) of the tumour block in positive slides


def _tiles(data_dir, prefixes):
    from PIL import Image

    d = data_dir / "tissue_tiles" / "images"
    return [np.asarray(Image.open(p).convert("RGB")) for pre in prefixes for p in sorted(d.glob(f"{pre}-*.png"))]


def _slide(rng, neg, tum, positive: bool, n: int = 1024) -> np.ndarray:
    """Glass with a 4 x 4 grid of real non-tumour tiles (224 px); positives get one tumour tile
    at :data:`TUMOUR_BOX`."""
    a = np.full((n, n, 3), 240, np.uint8)
    for y in range(128, n - 128 - 223, 224):
        for x in range(128, n - 128 - 223, 224):
            a[y:y + 224, x:x + 224] = neg[rng.integers(len(neg))]
    if positive:
        y0, x0, y1, x1 = TUMOUR_BOX
        a[y0:y1, x0:x1] = tum[rng.integers(len(tum))]
    return a


@pytest.fixture(scope="module")
def small_slides(tmp_path_factory, data_dir):
    """Four 1024 px slides at 0.5 µm/px (two with tumour, one of them with the block drawn),
    a labels CSV and an annotations folder."""
    from napari_histoai.io.regions import write_polygons
    from napari_histoai.io.writers import write_pyramid_ometiff

    root = tmp_path_factory.mktemp("heatmap")
    (root / "slides").mkdir()
    (root / "ann").mkdir()
    rng = np.random.default_rng(0)
    neg, tum = _tiles(data_dir, ["NORM", "STR", "LYM", "MUS"]), _tiles(data_dir, ["TUM"])
    rows = ["slide,label"]
    for i in range(4):
        pos = i % 2 == 0
        write_pyramid_ometiff(root / "slides" / f"s{i}.ome.tif", _slide(rng, neg, tum, pos), mpp=0.5, min_size=256)
        rows.append(f"s{i}.ome.tif,{'tumour' if pos else 'normal'}")
    y0, x0, y1, x1 = TUMOUR_BOX
    write_polygons(root / "ann" / "s0.geojson", [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)])
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _tiny(**kw):
    from napari_histoai.methods.heatmap import config_from

    return config_from("compact", **{"init_steps": 30, "round_steps": 10, "rounds": 1, "stage2_epochs": 2, **kw})


class _MarkerModel:
    """A heatmap model whose stage 1 is a fixed rule (pure red pixels are 'tumour'), to check
    where the pipeline puts things."""

    def __new__(cls):
        from napari_histoai.methods.heatmap.model import HeatmapModel
        from napari_histoai.methods.heatmap.network import ClassifierEnsemble, PatchSegNet

        m = HeatmapModel(PatchSegNet(8), ClassifierEnsemble(3), _tiny(width=8))

        def predict_maps(tiles):
            out = []
            for t in tiles:
                red = ((t[..., 0] > 200) & (t[..., 1] < 60) & (t[..., 2] < 60)).astype(np.float32)
                h, w = red.shape
                H, W = -(-h // 4) * 4, -(-w // 4) * 4
                pad = np.zeros((H, W), np.float32)
                pad[:h, :w] = red
                out.append(pad.reshape(H // 4, 4, W // 4, 4).mean((1, 3))[None])
            return out

        m.predict_maps = predict_maps
        return m


def test_the_heatmap_file_puts_a_known_region_at_its_place_in_um(tmp_path, data_dir):
    import tifffile

    from napari_histoai.io import open_image
    from napari_histoai.io.writers import write_pyramid_ometiff
    from napari_histoai.tasks import heatmap_file

    rng = np.random.default_rng(1)
    a = _slide(rng, _tiles(data_dir, ["NORM", "STR"]), [], False, n=2048)
    a[1000:1200, 600:800] = (230, 20, 20)  # the marker: 100 x 100 µm at (500, 300) µm
    slide = write_pyramid_ometiff(tmp_path / "m.ome.tif", a, mpp=0.5)
    s = heatmap_file(slide, tmp_path / "h.ome.tif", model=_MarkerModel())
    assert s["heatmap_mpp"] == pytest.approx(4.0)       # 1 µm model px x stride 4
    with open_image(s["out"]) as hm:
        assert hm.mpp == pytest.approx(4.0)               # the file states its pixel size
        m = np.asarray(hm.levels[0])[..., 0]
    ys, xs = np.nonzero(m > 0.5)
    assert (ys.min() * 4, (ys.max() + 1) * 4) == (500, 600)  # µm
    assert (xs.min() * 4, (xs.max() + 1) * 4) == (300, 400)
    with tifffile.TiffFile(s["out"]) as tf:
        assert len(tf.series[0].levels) >= 1 and tf.series[0].dtype == np.float32
    # the top box (highest stage-1 maximum) holds the marker
    b = s["top_k"][0]
    assert b["y0"] <= 1000 and b["y1"] >= 1200 - 200 and b["x0"] <= 800 and b["x1"] >= 600
    assert len(s["top_k"]) == 16


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_model_scores_slides(tmp_path, small_slides):
    from napari_histoai.methods.heatmap import load_heatmap_model, save_heatmap_model, train_heatmap_job
    from napari_histoai.methods.heatmap.data import training_slides
    from napari_histoai.methods.heatmap.job import heatmap_job

    slides, notes = training_slides(small_slides / "slides", small_slides / "labels.csv", small_slides / "ann")
    assert [s.label for s in slides] == [1, 0, 1, 0] and len(slides[0].regions) == 1 and notes == []
    losses = []
    res = run_job(train_heatmap_job(slides, _tiny(), device="cpu"),
                  lambda p: losses.append(p.info["loss"]) if "loss" in p.info else None)
    assert np.mean(losses[-3:]) < np.mean(losses[:2])   # round 0 on the drawn block lowers the loss
    assert [r["round"] for r in res.rounds] == [0, 1] and res.best_round == 1
    assert res.rounds[1]["n_negative"] > 0
    save_heatmap_model(res, tmp_path / "m")
    model = load_heatmap_model(tmp_path / "m")
    out = run_job(heatmap_job(small_slides / "slides" / "s2.ome.tif", model))
    assert 0 <= out.score <= 1 and out.maps.maps.shape[0] == 1
    assert len(out.top_k) == 9  # 512 model px: 3 x 3 patches of 256 at step 192, fewer than K


@pytest.mark.slow
def test_cancel_mid_round_keeps_the_previous_model(tmp_path, small_slides):
    from napari_histoai.tasks import train_heatmap

    out = tmp_path / "model"
    train_heatmap(small_slides / "slides", small_slides / "labels.csv", out, annotations=small_slides / "ann",
                  config=_tiny(init_steps=4, round_steps=2, stage2_epochs=1))
    before = hashlib.sha256((out / "weights.safetensors").read_bytes()).hexdigest()
    flag = CancelFlag()

    def cancel_in_round_1(p):
        if p.info.get("round") == 1 and p.info.get("phase") == "stage 1":
            flag.set()

    with pytest.raises(Cancelled):
        train_heatmap(small_slides / "slides", small_slides / "labels.csv", out, annotations=small_slides / "ann",
                      config=_tiny(round_steps=40, seed=3), on_progress=cancel_in_round_1, cancel=flag)
    assert hashlib.sha256((out / "weights.safetensors").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left


@pytest.mark.slow
def test_commands_train_then_map_a_slide(tmp_path, small_slides, capsys):
    from napari_histoai.cli import main

    model = tmp_path / "hm"
    rc = main(["train-heatmap", "--slides", str(small_slides / "slides"), "--labels", str(small_slides / "labels.csv"),
               "--annotations", str(small_slides / "ann"), "--out", str(model), "--rounds", "1", "--steps", "5",
               "--init-steps", "10"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["annotated"] == 1 and summary["slides"] == 4
    rc = main(["heatmap", str(small_slides / "slides" / "s0.ome.tif"), "--model", str(model),
               "--out", str(tmp_path / "h.ome.tif")])
    assert rc == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= s["score"] <= 1 and s["heatmap_mpp"] == pytest.approx(4.0) and len(s["top_k"]) == 9
    assert (tmp_path / "h.ome.tif").is_file()


def _err(capsys, argv) -> str:
    from napari_histoai.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_bad_training_input_is_one_line(tmp_path, small_slides, capsys):
    base = ["train-heatmap", "--slides", str(small_slides / "slides"), "--out", str(tmp_path / "m")]
    lab = tmp_path / "labels.csv"
    lab.write_text("slide,label\ns0.ome.tif,tumour\nmissing.svs,normal\n")
    assert "not among the inputs: missing.svs" in _err(capsys, base + ["--labels", str(lab)])
    lab.write_text("slide,label\ns0.ome.tif,tumour\ns1.ome.tif,perhaps\n")
    assert "unknown label 'perhaps'" in _err(capsys, base + ["--labels", str(lab)])
    lab.write_text("slide,label\ns0.ome.tif,tumour\ns2.ome.tif,tumour\n")
    assert "at least one tumour slide and one slide without" in _err(capsys, base + ["--labels", str(lab)])
    # a drawn region outside the slide
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "s0.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[5000, 5000], [6000, 5000], [6000, 6000],
                                                                             [5000, 5000]]]}}]}))
    err = _err(capsys, base + ["--labels", str(small_slides / "labels.csv"), "--annotations", str(ann)])
    assert "lies outside the slide" in err
    # mixed supervision without any drawn region
    assert "needs tumour regions drawn" in _err(capsys, base + ["--labels", str(small_slides / "labels.csv")])
    # a slide that cannot be read
    bad = tmp_path / "slides"
    bad.mkdir()
    (bad / "broken.tif").write_text("not a tiff")
    lab.write_text("slide,label\nbroken.tif,tumour\ns1.ome.tif,normal\n")
    err = _err(capsys, ["train-heatmap", "--slides", str(small_slides / "slides"), str(bad), "--labels", str(lab),
                        "--mode", "image", "--out", str(tmp_path / "m")])
    assert "broken.tif" in err
    assert not (tmp_path / "m").exists()


def test_a_slide_without_tissue_is_one_line(tmp_path, capsys):
    from napari_histoai.io.writers import write_pyramid_ometiff
    from napari_histoai.methods.heatmap import save_heatmap_model
    from napari_histoai.methods.heatmap.train import HeatmapTrainResult

    m = _MarkerModel()
    res = HeatmapTrainResult(m.seg.state_dict(), m.cls.state_dict(), m.config, 0.5)
    save_heatmap_model(res, tmp_path / "m")
    glass = write_pyramid_ometiff(tmp_path / "glass.ome.tif", np.full((600, 600, 3), 242, np.uint8), mpp=0.5)
    err = _err(capsys, ["heatmap", str(glass), "--model", str(tmp_path / "m"), "--out", str(tmp_path / "h.ome.tif")])
    assert "no tissue" in err
    assert not (tmp_path / "h.ome.tif").exists()
    # a model of another kind
    err = _err(capsys, ["heatmap", str(glass), "--model", "acformer-crc", "--out", str(tmp_path / "h.ome.tif")])
    assert "not a 'tumour-heatmap' model" in err
