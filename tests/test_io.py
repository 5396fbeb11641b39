"""Opening real slides lazily, with physical scale; clear errors for bad files."""

import numpy as np
import pytest
import tifffile

from napari_histoai.errors import JobError
from napari_histoai.io import from_array, open_image
from napari_histoai.io.napari_reader import get_reader, layer_data
from napari_histoai.io.writers import write_labels_ometiff, write_pyramid_ometiff


def test_svs_opens_with_mpp_and_magnification(slides_dir):
    img = open_image(slides_dir / "CMU-1-Small-Region.svs")
    assert img.shape == (2967, 2220, 3) and img.format == "svs"
    assert img.mpp == pytest.approx(0.499) and img.magnification == 20
    px = img.read_region(1000, 1000, 1064, 1100)
    assert px.shape == (64, 100, 3) and px.dtype == np.uint8 and px.std() > 5  # real tissue


def test_ome_tiff_physical_size(slides_dir):
    img = open_image(slides_dir / "OS-1-detail.ome.tif")
    assert img.format == "ome-tiff" and img.mpp == pytest.approx(0.2271, abs=1e-4)


def test_four_level_pyramid(slides_dir):
    img = open_image(slides_dir / "openslide_python_fixtures" / "boxes.tiff")
    assert [lv.shape[:2] for lv in img.levels] == [(250, 300), (125, 150), (62, 75), (31, 37)]
    assert img.mpp is None  # 72-dpi default resolution is not a microscope pixel size


def test_openslide_backend_for_dicom(slides_dir):
    pytest.importorskip("openslide")
    img = open_image(slides_dir / "openslide_python_fixtures" / "boxes_0.dcm")
    assert img.backend == "openslide" and img.read_region(0, 0, 8, 8).shape == (8, 8, 3)


def test_generated_subifd_pyramid_is_lazy_and_exact(mosaic_slide, real_tiles):
    from napari_histoai.io.mosaic import PeriodicMosaic

    img = open_image(mosaic_slide)
    assert img.format == "ome-tiff" and img.mpp == pytest.approx(0.5)
    assert len(img.levels) >= 4 and img.levels[1].shape[:2] == (3000, 3500)
    # lazy: level 0 is chunked by tile, nothing decoded until asked
    assert max(img.levels[0].chunksize[:2]) <= 512 and img.levels[0].npartitions > 100
    want = PeriodicMosaic(real_tiles, period=4).region(2500, 3000, 2756, 3300)
    got = img.read_region(2500, 3000, 2756, 3300)
    assert np.abs(got.astype(int) - want).mean() < 6  # JPEG q85


def test_big_plain_tiff_is_read_by_strips_not_whole(tmp_path):
    a = np.zeros((6000, 5000, 3), np.uint8)
    a[3000:3010] = 200
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, a, rowsperstrip=64)
    img = open_image(p)
    assert img.levels[0].chunksize[0] <= 64
    assert img.read_region(2995, 10, 3005, 20)[5:, 0, 0].tolist() == [200] * 5
    # the napari layer gets lazy display levels instead of one 30-MP plane
    data, kw, kind = layer_data(img)[0]
    assert kw["multiscale"] and len(data) >= 3 and data[-1].shape[0] <= 1600


def test_napari_reader_contract(sample_path):
    reader = get_reader(str(sample_path))
    (data, kw, kind), = reader(str(sample_path))
    assert kind == "image" and kw["multiscale"] and kw["rgb"]
    assert kw["scale"] == pytest.approx((0.499, 0.499))
    assert [d.shape[0] for d in data] == [1024, 512, 256]
    assert get_reader("notes.txt") is None


def test_pyramid_writer_round_trip(tmp_path, sample_path):
    src = open_image(sample_path).read_region(0, 0, 700, 600)
    p = write_pyramid_ometiff(tmp_path / "w.ome.tif", src, mpp=0.25, tile=256, min_size=256)
    img = open_image(p)
    assert img.mpp == pytest.approx(0.25) and len(img.levels) == 2
    assert np.abs(img.read_region(0, 0, 700, 600).astype(int) - src).mean() < 4


def test_labels_ometiff_uint16_and_uint32(tmp_path):
    lab = np.zeros((300, 200), np.int64)
    lab[5:9, 5:9] = 7
    a = open_image(write_labels_ometiff(tmp_path / "a.ome.tif", lab, mpp=0.5))
    assert a.dtype == np.uint16 and a.mpp == pytest.approx(0.5)
    lab[0, 0] = 70000
    b = open_image(write_labels_ometiff(tmp_path / "b.ome.tif", lab))
    assert b.dtype == np.uint32 and int(b.read_region(0, 0, 300, 200).max()) == 70000


# ---------------------------------------------------------------- bad input
def _write(p, b):
    p.write_bytes(b)
    return p


def _truncated(src, dst, n):
    dst.write_bytes(src.read_bytes()[:n])
    return dst


@pytest.mark.parametrize("maker,match", [
    (lambda d, s: d / "missing.svs", "no such file"),
    (lambda d, s: _write(d / "empty.tif", b""), "empty file"),
    (lambda d, s: _write(d / "junk.svs", b"not a tiff at all" * 10), "cannot read"),
    (lambda d, s: _truncated(s / "CMU-1-Small-Region.svs", d / "trunc.svs", 4000), "cannot read"),
    (lambda d, s: _write(d / "x.docx", b"PK"), "cannot read|unsupported"),
])
def test_bad_files_give_one_line_errors(tmp_path, slides_dir, maker, match):
    path = maker(tmp_path, slides_dir)
    with pytest.raises(JobError, match=match) as e:
        open_image(path)
    assert "\n" not in str(e.value)


def test_truncated_tile_data_fails_at_read_with_one_line(tmp_path, slides_dir):
    src = slides_dir / "CMU-1-Small-Region.svs"
    p = _truncated(src, tmp_path / "cut.svs", src.stat().st_size // 2)
    try:
        img = open_image(p)
    except JobError:
        return  # refusing at open time is fine too
    with pytest.raises(JobError, match="cannot read pixels"):
        img.read_region(2900, 2100, 2967, 2220)


def test_non_rgb_and_16bit_are_refused_for_he_methods(data_dir):
    img = open_image(data_dir / "fluorescence" / "stardist_dsb2018" / "images" / "dsb2018_img2d.tif")
    with pytest.raises(JobError, match="RGB"):
        img.require_rgb8("nuclei detection")
    img16 = from_array(np.zeros((10, 10, 3), np.uint16))
    with pytest.raises(JobError, match="8-bit"):
        img16.require_rgb8()
    with pytest.raises(JobError, match="empty"):
        from_array(np.zeros((0, 10, 3), np.uint8))


def test_out_of_range_region(sample_path):
    with pytest.raises(JobError, match="outside the image"):
        open_image(sample_path).read_region(1000, 0, 1100, 10)


@pytest.mark.parametrize("fmt", [2, 3])
def test_ome_zarr_multiscale(tmp_path, sample_path, fmt):
    import zarr

    src = open_image(sample_path)
    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=fmt)
    datasets = []
    for i, lv in enumerate(src.levels[:2]):
        a = np.moveaxis(np.asarray(lv), -1, 0)  # (c, y, x)
        arr = root.create_array(str(i), shape=a.shape, chunks=(3, 256, 256), dtype=a.dtype)
        arr[:] = a
        datasets.append({"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [1, 0.499 * 2**i, 0.499 * 2**i]}]})
    ms = [{"version": "0.4", "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
                                       {"name": "x", "type": "space", "unit": "micrometer"}], "datasets": datasets}]
    if fmt == 2:
        root.attrs["multiscales"] = ms
    else:
        root.attrs["ome"] = {"version": "0.5", "multiscales": ms}
    img = open_image(tmp_path / "img.ome.zarr")
    assert img.backend == "ome-zarr" and img.shape == (1024, 1024, 3) and len(img.levels) == 2
    assert img.mpp == pytest.approx(0.499)
    np.testing.assert_array_equal(img.read_region(10, 20, 30, 40), src.read_region(10, 20, 30, 40))
