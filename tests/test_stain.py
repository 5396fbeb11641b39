"""Stain matching by optical-density statistics: the lookup table, and a detector that finds the
same nuclei on a real H&E image whatever its stain intensity."""

import numpy as np

from napari_histoai.methods.stain import apply_lut, od_lut, od_stats

from .conftest import crc_image


def restain(rgb: np.ndarray, gain=(1.6, 1.3, 1.8), offset=(0.05, 0.0, 0.1)) -> np.ndarray:
    """Another lab's stain: optical density scaled and shifted per channel (Beer-Lambert)."""
    od = -np.log((rgb.astype(np.float64) + 1) / 256)
    od = od * np.array(gain) + np.array(offset)
    return np.clip(np.round(256 * np.exp(-od) - 1), 0, 255).astype(np.uint8)


def test_lut_of_equal_statistics_is_the_identity():
    s = np.array([[0.3, 0.5, 0.2], [0.2, 0.3, 0.1]])
    lut = od_lut(s, s)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert np.abs(lut.astype(int) - np.arange(256)[:, None]).max() <= 1


def test_matching_undoes_a_stain_change_on_a_real_image(data_dir):
    img = crc_image(data_dir, "img16", "val")
    other = restain(img)
    back = apply_lut(other, od_lut(od_stats(other), od_stats(img)))
    assert np.abs(other.astype(int) - img).mean() > 20          # the change is large
    assert np.abs(back.astype(int) - img).mean() < 6             # and matching undoes most of it
    assert np.allclose(od_stats(back), od_stats(img), atol=0.03)


def test_detector_finds_the_same_nuclei_on_a_restained_image(data_dir, one_torch_thread):
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    from napari_histoai.engine.inference import infer_array
    from napari_histoai.methods.detection.predict import load_acformer

    def agreement(a, b):
        d = cdist(a, b)
        r, c = linear_sum_assignment(d)
        return 2 * int((d[r, c] <= 3).sum()) / max(1, len(a) + len(b))

    img = crc_image(data_dir, "img16", "val")
    other = restain(img)
    det = load_acformer("acformer-crc", device="cpu")
    assert det.stain_target is not None                           # the bundled model matches stains
    det.stain_radius = None                                       # every image, the training lab's too
    ref = infer_array(det, img).points
    matched = infer_array(det, other).points
    det.stain_target = None                                       # the same network without matching
    raw = infer_array(det, other).points
    assert len(ref) > 100
    assert agreement(ref, matched) >= 0.8
    assert agreement(ref, matched) > agreement(ref, raw) + 0.1


def test_macenko_recovers_the_stain_vectors_an_image_was_made_with():
    """An image mixed from two known OD vectors (hematoxylin bluish: more red OD) gives them back,
    H first, and the concentrations it was made from."""
    from napari_histoai.methods.stain import macenko_vectors, stain_concentrations

    v = np.array([[0.60, 0.72, 0.35], [0.15, 0.85, 0.50]]).T
    v /= np.linalg.norm(v, axis=0)
    rng = np.random.default_rng(0)
    conc = np.stack([rng.gamma(2.0, 0.3, (120, 120)), rng.gamma(2.0, 0.3, (120, 120))], -1)
    conc[:10] = 0                                               # a strip of white background
    rgb = np.clip(np.round(256 * np.exp(-(conc @ v.T)) - 1), 0, 255).astype(np.uint8)
    got = macenko_vectors(rgb)
    assert got.shape == (3, 2)
    cos = (got * v).sum(0)
    assert cos.min() > 0.99, cos                                # both directions, in H, E order
    c = stain_concentrations(rgb, got)
    inside = (rgb[10:] < 250).all(-1)                           # unclipped pixels
    assert np.corrcoef(c[10:, :, 0][inside], conc[10:, :, 0][inside])[0, 1] > 0.95
    assert np.abs(c[:10]).max() < 0.05                          # background: no stain


def test_images_within_the_training_stains_are_left_as_they_are(data_dir):
    """The bundled detector carries the range of its training stains: an image from the training
    lab is not mapped (mapping it costs F_c), another lab's stain is."""
    from napari_histoai.methods.detection.predict import load_acformer
    from napari_histoai.methods.stain import matching_lut, stain_distance, stain_range

    imgs = [crc_image(data_dir, n, "val") for n in ("img16", "img25")]
    target, spread, radius = stain_range(imgs + [restain(imgs[0], (1.1, 1.05, 1.1), (0.0, 0.0, 0.0))], 50)
    assert spread.shape == (2, 3) and (spread > 0).all() and radius > 0
    det = load_acformer("acformer-crc", device="cpu")
    assert det.stain_radius is not None and det.stain_spread.shape == (2, 3)
    img = imgs[0]
    det.prepare(img, np.ones(img.shape[:2], bool))
    assert det.stain_lut is None                                  # the training lab's colours stay
    other = restain(img)
    det.prepare(other, np.ones(other.shape[:2], bool))
    assert det.stain_lut is not None                              # another lab's are matched
    assert stain_distance(od_stats(other), det.stain_target, det.stain_spread) > det.stain_radius
    # without a range (older models) every image is matched
    assert matching_lut(od_stats(img), det.stain_target) is not None
    assert matching_lut(od_stats(img), det.stain_target, det.stain_spread, det.stain_radius) is None


def test_images_matched_to_the_training_stain_are_detected_at_the_shifted_threshold(data_dir, one_torch_thread):
    """The bundled detector's ``stain_matched_shift`` (picked on MoNuSeg's mask-only tiles by
    scripts/pick_matched_shift.py) lowers the threshold only for images it matches to the
    training stain, so another lab's image gets more of its nuclei; an image from the training
    lab, and a threshold the user gives, stay as they are."""
    import pytest

    from napari_histoai.engine.inference import infer_array
    from napari_histoai.errors import JobError
    from napari_histoai.methods.detection.configs import ACFormerConfig
    from napari_histoai.methods.detection.predict import load_acformer

    det = load_acformer("acformer-crc", device="cpu")
    assert det.matched_shift < 0
    img = crc_image(data_dir, "img16", "val")
    own = infer_array(det, img)
    assert det.stain_lut is None and det.operating_threshold == det.threshold
    other = restain(img)
    shifted = infer_array(det, other)
    assert det.stain_lut is not None and det.operating_threshold == pytest.approx(det.threshold + det.matched_shift)
    given = load_acformer("acformer-crc", device="cpu", threshold=det.threshold)
    plain = infer_array(given, other)
    assert given.stain_lut is not None and given.operating_threshold == given.threshold
    assert len(shifted) > len(plain) and len(own) == len(infer_array(given, img))
    with pytest.raises(JobError, match="stain_matched_shift"):
        ACFormerConfig(stain_matched_shift=2.0).validate()
