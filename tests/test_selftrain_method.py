"""The self-trained nuclei segmenter (methods/selftrain, the default of "Segment nuclei"): its
pseudo labels, a short training on a real MoNuSeg tile that a user would call a segmentation,
save/load, and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_histoai.engine.jobs import run_job
from napari_histoai.errors import JobError
from napari_histoai.methods.selftrain import (
    SelfTrainConfig,
    load_selftrained,
    pseudo_labels,
    save_selftrained,
)
from napari_histoai.methods.selftrain.job import segment_image_job

TINY = dict(crop=96, widths=(8, 16, 32))
MONUSEG_TILE = "TCGA-21-5784-01Z-00-DX1"  # 40x, 0.25 µm/px, instance masks
MONUSEG_MPP = 0.25


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny networks: one torch thread (fixture in conftest)."""


def he_discs(seed: int = 0):
    """RGB uint8 [160, 160, 3] at 0.5 µm/px: dark purple discs (8 µm nuclei) on eosin pink, two of
    them touching; and their truth labels (touching pixels go to the nearer centre)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:160, :160]
    centres = [(30, 30), (30, 80), (30, 130), (80, 30), (80, 130), (130, 30), (130, 80), (130, 130),
               (80, 71), (80, 89)]  # the last two touch
    d2 = np.stack([(yy - cy) ** 2 + (xx - cx) ** 2 for cy, cx in centres])
    truth = np.where(d2.min(0) <= 8 ** 2, d2.argmin(0) + 1, 0)
    img = np.empty((160, 160, 3), np.float32)
    img[:] = (235, 160, 200)
    img[truth > 0] = (80, 40, 140)
    img = ndi.gaussian_filter(img, (0.7, 0.7, 0)) + rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def test_pseudo_labels_find_the_discs_and_leave_out_only_their_rims():
    img, truth = he_discs()
    p = pseudo_labels(img, SelfTrainConfig(mpp=0.5))
    assert p.instances.max() == truth.max() == 10  # the touching pair is split too
    for i in range(1, 11):
        disc = truth == i
        ids, counts = np.unique(p.instances[disc], return_counts=True)
        j = ids[np.argmax(counts * (ids > 0))]
        iou = (disc & (p.instances == j)).sum() / (disc | (p.instances == j)).sum()
        assert iou > 0.85, (i, iou)
    # the loss leaves out only the uncertain pixels: next to a disc's edge, few of them
    edge = np.where(truth > 0, ndi.distance_transform_edt(truth > 0), ndi.distance_transform_edt(truth == 0))
    out = p.weight == 0
    assert out.any() and edge[out].max() <= 2.5
    assert out.mean() < 0.03
    assert p.fg[truth > 0].mean() > 0.9 and not p.fg[(truth == 0) & (edge > 3)].any()
    core = (truth > 0) & (edge > 3)
    assert p.dist[core].mean() > 0.4 and p.dist[truth == 0].max() == 0


@pytest.fixture(scope="module")
def monuseg(request):
    """(RGB 400 x 400 crop of a MoNuSeg tile, its truth mask, losses, labels, model) after 150
    steps of training on the crop itself (no labels used)."""
    import tifffile
    from skimage.io import imread

    data = request.getfixturevalue("data_dir")
    img_path = data / "monuseg" / "train" / "images" / f"{MONUSEG_TILE}.png"
    mask_path = data / "monuseg" / "train" / "masks" / f"{MONUSEG_TILE}.tif"
    if not (img_path.exists() and mask_path.exists()):
        pytest.skip("MoNuSeg tile not available")
    rgb = np.ascontiguousarray(imread(img_path)[:400, :400, :3])
    truth = tifffile.imread(mask_path)[:400, :400] > 0
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    losses = []
    try:
        res, model = run_job(segment_image_job(rgb, config=SelfTrainConfig(steps=150, seed=0, **TINY),
                                               mpp=MONUSEG_MPP, tissue_only=False),
                             lambda p: losses.append(p.info["loss"]) if p.info and "loss" in p.info else None)
    finally:
        torch.set_num_threads(n)
    return rgb, truth, losses, np.asarray(res.labels), model


def test_training_on_a_real_tile_segments_its_nuclei(monuseg):
    from napari_histoai.metrics import dice

    rgb, truth, losses, labels, _ = monuseg
    assert len(losses) >= 10 and losses[-1] < 0.8 * losses[0]
    assert labels.shape == truth.shape  # back on the 40x grid
    assert dice(labels > 0, truth) > 0.6
    # touching nuclei are split: more objects than connected blobs in the mask
    n_blobs = ndi.label(labels > 0)[1]
    assert labels.max() > 1.15 * n_blobs
    assert 40 < labels.max() < 200  # ~100 nuclei in this 100 x 100 µm crop


def test_save_and_load_give_identical_labels(monuseg, tmp_path):
    from napari_histoai.engine.inference import infer_array
    from napari_histoai.models import read_config

    rgb, _, _, labels, model = monuseg
    folder = save_selftrained(model.net, model.config, tmp_path / "mine", training={"image": MONUSEG_TILE})
    assert read_config(folder)["kind"] == "selftrain-segmenter"
    again = load_selftrained(folder)
    assert again.config == model.config
    a = infer_array(again, rgb, mpp=MONUSEG_MPP)
    b = infer_array(model, rgb, mpp=MONUSEG_MPP)
    assert np.array_equal(np.asarray(a.labels), np.asarray(b.labels))
    assert np.array_equal(np.asarray(a.labels), labels)


def test_a_model_of_another_kind_is_one_line():
    with pytest.raises(JobError) as e:
        load_selftrained("cycpdam-he")  # the bundled adapted segmenter
    assert "'cycpdam-segmenter' model, not a 'selftrain-segmenter'" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_white_image_is_one_line():
    white = np.full((200, 200, 3), 245, np.uint8)
    with pytest.raises(JobError) as e:
        run_job(segment_image_job(white, config=SelfTrainConfig(steps=5, **TINY), mpp=0.5))
    assert str(e.value).startswith("no nuclei-like") and "\n" not in str(e.value)


def test_segment_file_dispatches_on_the_models_kind(tmp_path):
    from napari_histoai.methods.contrastive import ContrastiveConfig
    from napari_histoai.tasks import segment_method

    assert segment_method() == "selftrain"
    assert segment_method(config=ContrastiveConfig()) == "contrastive"
    assert segment_method(config=SelfTrainConfig()) == "selftrain"
    with pytest.raises(JobError, match="not a nuclei segmenter"):
        segment_method(model="cycpdam-he")
    with pytest.raises(JobError, match="needs method 'contrastive'"):
        segment_method("selftrain", config=ContrastiveConfig())
    with pytest.raises(JobError, match="unknown segmentation method"):
        segment_method("stardist")
