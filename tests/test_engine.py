"""The one tiled-inference primitive (engine.inference.infer) with real models on real slides:
pyramid level choice and resampling, the pixel size used and where it came from, labels streamed
to zarr on disk equal to the in-memory result, maps, cancel, and one-line errors."""

import numpy as np
import pytest

from napari_histoai.engine.inference import infer, infer_array
from napari_histoai.engine.jobs import run_job
from napari_histoai.errors import CancelFlag, Cancelled, JobError
from napari_histoai.io import from_array, open_image
from napari_histoai.methods.classical import ClassicalDetector, ClassicalSegmenter

from .conftest import DATA, crc_image

VAL = sorted(p.stem for p in (DATA / "crchisto" / "val" / "images").glob("*.png"))[:2] or ["missing", "missing"]


def test_points_read_the_level_closest_to_the_model_and_come_back_in_level0_px(data_dir):
    """A 40x (0.25 µm/px) two-level image and a 20x detector: the engine reads level 1 and
    reports the same nuclei as the detector on that level, in level-0 px."""
    rgb = crc_image(data_dir, VAL[0], "val")  # 500 x 500 at 20x
    big = np.repeat(np.repeat(rgb, 2, 0), 2, 1)  # the same tissue at 40x
    slide = from_array([big, rgb], mpp=0.25)
    res = run_job(infer(slide, ClassicalDetector(), tissue_only=False))
    direct = infer_array(ClassicalDetector(), rgb, mpp=0.5)
    assert res.mpp == 0.25 and res.mpp_source == "file" and len(res) == len(direct) > 100
    np.testing.assert_allclose(np.sort(res.points[:, 0]), np.sort((direct.points[:, 0] + 0.5) * 2 - 0.5))


def test_pixel_size_file_given_or_assumed(data_dir):
    rgb = crc_image(data_dir, VAL[1], "val")
    at_model = infer_array(ClassicalDetector(), rgb)  # validation arrays are at the model's resolution
    assert at_model.mpp == 0.5 and at_model.mpp_source == "given"
    res = run_job(infer(from_array(rgb), ClassicalDetector(), tissue_only=False))
    assert res.mpp == 0.5 and res.mpp_source == "assumed" and "no pixel size" in res.notes[0]
    given = run_job(infer(from_array(rgb), ClassicalDetector(), mpp=1.0, tissue_only=False))
    assert given.mpp_source == "given" and given.mpp_text.startswith("1 µm/px")
    assert len(given) > len(res)  # at 1 µm/px the image is upsampled 2x: nuclei look twice as large
    with pytest.raises(JobError):
        run_job(infer(from_array(rgb), ClassicalDetector(), mpp=float("nan")))


@pytest.mark.slow
def test_labels_stream_to_zarr_on_disk_and_equal_the_in_memory_result(mosaic_slide, tmp_path):
    """Whole-slide instance labels never need to sit in RAM: with a store (or past the in-memory
    limit) they are written tile by tile into a zarr array on disk; ids are the same."""
    import zarr

    from napari_histoai.io.writers import write_labels_ometiff

    slide = open_image(mosaic_slide)
    region = (1000, 1500, 2300, 2700)
    mem = run_job(infer(slide, ClassicalSegmenter(), region))
    disk = run_job(infer(slide, ClassicalSegmenter(), region, store=tmp_path / "labels.zarr"))
    auto = run_job(infer(slide, ClassicalSegmenter(), (0, 0, 300, 300), in_memory_max=1000))
    assert isinstance(mem.labels, np.ndarray) and mem.n_objects > 200 and mem.n_tiles == 4
    assert isinstance(disk.labels, zarr.Array) and (tmp_path / "labels.zarr").is_dir()
    assert auto.store is not None and auto.store.is_dir() and isinstance(auto.labels, zarr.Array)
    assert disk.labels.shape == mem.labels.shape == (1300, 1200) and disk.origin == (1000, 1500)
    np.testing.assert_array_equal(np.asarray(disk.labels[:]), mem.labels)
    assert disk.n_objects == mem.n_objects == len(np.unique(mem.labels)) - 1
    out = write_labels_ometiff(tmp_path / "labels.ome.tif", disk.labels, mpp=0.5, max_id=disk.n_objects)
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(out), mem.labels)


def test_maps_stitch_like_one_pass():
    import torch

    from napari_histoai.methods.contrastive.network import ConfidenceNet
    from napari_histoai.methods.contrastive.predict import ConfidenceMaps, net_maps

    torch.manual_seed(0)
    net = ConfidenceNet(2).eval()
    rgb = np.random.default_rng(1).integers(0, 255, (420, 380, 3), dtype=np.uint8)
    tiled = infer_array(ConfidenceMaps(net, tile=300), rgb)
    assert tiled.n_tiles > 1 and tiled.maps.shape == (2, 420, 380) and tiled.channels == ["0", "1"]
    np.testing.assert_allclose(tiled.maps, net_maps(net, rgb), atol=1e-5)


def test_cancel_stops_between_tiles(mosaic_slide):
    slide = open_image(mosaic_slide)
    flag = CancelFlag()
    seen = []

    def on(p):
        seen.append(p.done)
        if p.done >= 2:
            flag.set()

    with pytest.raises(Cancelled):
        run_job(infer(slide, ClassicalDetector(), batch_size=1, cancel=flag), on, flag)
    assert max(seen) < 10


def test_bad_regions_and_images_are_one_line_errors(data_dir):
    rgb = crc_image(data_dir, VAL[0], "val")
    for region in [(0, 0, 0, 10), (600, 600, 700, 700), (0, 0, float("inf"), 10)]:
        with pytest.raises(JobError):
            run_job(infer(rgb, ClassicalDetector(), region))
    with pytest.raises(JobError):
        run_job(infer(rgb[..., 0], ClassicalDetector()))
    with pytest.raises(TypeError):
        run_job(infer(rgb, object()))


class _BlockDarkness:
    """A dense map with a stride: the mean darkness (1 - grey / 255) of every 16 px block, the
    way a patch classifier reports one value per patch."""

    name, channels, mpp, tile_size, overlap, stride = "darkness", ["dark"], None, 128, 32, 16

    def predict_maps(self, tiles):
        out = []
        for t in tiles:
            g = 1 - t.mean(-1) / 255.0
            h, w = -(-g.shape[0] // 16), -(-g.shape[1] // 16)
            pad = np.pad(g, ((0, h * 16 - g.shape[0]), (0, w * 16 - g.shape[1])), mode="edge")
            out.append(pad.reshape(h, 16, w, 16).mean((1, 3))[None].astype(np.float32))
        return out


def test_strided_maps_land_on_their_patch_grid(data_dir):
    """Maps coarser than the pixels (stride 16) are stitched on a grid of 16 px: every value is
    the one its own block gives, whichever tile computed it."""
    rgb = crc_image(data_dir, VAL[0], "val")[:480, :448]
    res = infer_array(_BlockDarkness(), rgb)
    assert res.n_tiles > 4 and res.maps.shape == (1, 30, 28) and res.downsample == 16
    direct = _BlockDarkness().predict_maps([rgb])[0]
    np.testing.assert_allclose(res.maps, direct, atol=1e-6)


def test_big_image_without_pyramid_is_sampled_not_decoded_whole(tmp_path, data_dir, monkeypatch):
    """An image with no level small enough for an overview (here: the limit lowered to 1 MP for a
    2000 x 2000 single-level TIFF) never has its overview read: a bounded sample of windows feeds
    the model's prepare hook, and each tile is checked for tissue on its own pixels."""
    import tifffile

    import napari_histoai.engine.inference as E
    from napari_histoai.io import SlideImage

    tissue = np.tile(crc_image(data_dir, VAL[0], "val"), (2, 4, 1))[:1000, :2000]
    img = np.full((2000, 2000, 3), 240, np.uint8)  # glass ...
    img[:1000] = tissue                             # ... with tissue in the top half
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, img, tile=(256, 256), photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    monkeypatch.setattr(E, "OVERVIEW_MAX_PIXELS", 1_000_000)
    monkeypatch.setattr(SlideImage, "read_overview", lambda *a, **k: pytest.fail("the overview was read"))
    prepared = []
    det = ClassicalDetector()
    det.prepare = lambda thumb, mask: prepared.append((thumb.shape, mask.mean()))
    res = run_job(infer(open_image(path), det))
    assert res.mpp == pytest.approx(0.5) and len(prepared) == 1 and prepared[0][1] > 0
    assert res.n_tiles_skipped >= 4 and len(res) > 500
    assert res.points[:, 0].max() < 1100  # nothing found on the glass
