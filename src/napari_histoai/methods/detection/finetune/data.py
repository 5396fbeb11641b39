"""Training data for mixed supervision: one image (or the part of a slide around the user's
regions) at the model's resolution, its fine points, rasterised region masks, the pseudo labels
of the current EM round, held-out validation blocks, and crop sampling per kind.

Masks are bool [H, W] at the model's resolution:

* ``reviewed``  inside a reviewed region (minus the held-out blocks): the points are ground truth;
* ``negative``  inside a no-target region: no target at all (hard negatives);
* ``pseudo``    kept pseudo-label patches (set by the E-step), outside the two above: their
  pseudo points are targets; unmatched proposals there are background only when the job trusts
  pseudo patches as complete (``pseudo_negatives``);
* everything else is *ignored*: unmatched proposals there are neither pushed up nor down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ....errors import JobError

__all__ = ["MixedImage", "rasterise", "make_mixed_image", "split_holdout", "sample_crop", "crop_at"]


@dataclass
class MixedImage:
    """image uint8 [H, W, 3] at model mpp; points [N, 2] (y, x) px + labels [N] (-1 = unknown
    class) = the fine labels inside ``reviewed``; ``extra_*`` = user-added points outside the
    reviewed regions (weight 1, they replace pseudo points nearby)."""

    name: str
    image: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    reviewed: np.ndarray
    negative: np.ndarray
    extra_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    extra_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    holdout: list = field(default_factory=list)          # [(y0, x0, y1, x1)] validation blocks
    pseudo: Optional[np.ndarray] = None                   # kept pseudo area (bool [H, W])
    pseudo_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    pseudo_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pseudo_weights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    offset: tuple = (0.0, 0.0)                            # level-0 px of pixel (0, 0)
    scale: float = 1.0                                    # level-0 px per model px
    matched: bool = False                                 # image matched to the model's training stain

    @property
    def shape(self) -> tuple:
        return self.image.shape[:2]

    def has(self, kind: str) -> bool:
        if kind == "fine":
            return bool(self.reviewed.any())
        if kind == "negative":
            return bool(self.negative.any())
        return self.pseudo is not None and bool(self.pseudo.any())


def rasterise(polys, shape) -> np.ndarray:
    """Union of polygons [K, 2] (y, x) px as bool [H, W]."""
    from skimage.draw import polygon

    m = np.zeros(shape, bool)
    for p in polys:
        p = np.asarray(p, np.float64).reshape(-1, 2)
        if len(p) >= 3:
            rr, cc = polygon(p[:, 0], p[:, 1], shape)
            m[rr, cc] = True
    return m


def _inside(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    if len(pts) == 0:
        return np.zeros(0, bool)
    h, w = mask.shape
    iy = np.clip(np.floor(pts[:, 0] + 0.5).astype(int), 0, h - 1)
    ix = np.clip(np.floor(pts[:, 1] + 0.5).astype(int), 0, w - 1)
    return mask[iy, ix]


def make_mixed_image(name: str, image: np.ndarray, points, classes, class_names, reviewed_polys=(),
                     no_target_polys=(), sources=None) -> MixedImage:
    """Build a :class:`MixedImage` from an RGB image and points/regions in its pixel frame.

    ``classes`` [N] str per point; ``class_names`` = the model's classes (other names, e.g.
    'unlabeled', become label -1: detection only). Points inside reviewed regions are fine labels;
    outside them only ``source == 'user'`` points are kept (as extra weight-1 targets)."""
    image = np.ascontiguousarray(np.asarray(image)[..., :3])
    if image.ndim != 3 or image.dtype != np.uint8:
        raise JobError("training needs an RGB uint8 image")
    shape = image.shape[:2]
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    index = {c: i for i, c in enumerate(class_names)}
    labels = np.array([index.get(str(c), -1) for c in classes], np.int64).reshape(-1)
    reviewed = rasterise(reviewed_polys, shape)
    negative = rasterise(no_target_polys, shape) & ~reviewed
    inside = _inside(reviewed, pts)
    user = np.array([s == "user" for s in sources], bool) if sources is not None else np.zeros(len(pts), bool)
    extra = ~inside & user & ~_inside(negative, pts)
    return MixedImage(name, image, pts[inside], labels[inside], reviewed, negative,
                      extra_points=pts[extra], extra_labels=labels[extra])


def split_holdout(item: MixedImage, fraction: float = 0.2, block: int = 96, seed: int = 0) -> list:
    """Hold out about ``fraction`` of the reviewed area for validation: square blocks that are
    at least 90% reviewed, chosen at random (none when fewer than 3 such blocks). The blocks are
    removed from ``item.reviewed`` and ignored in training. Returns the blocks (y0, x0, y1, x1)."""
    h, w = item.shape
    cand = []
    for y0 in range(0, h - block + 1, block):
        for x0 in range(0, w - block + 1, block):
            if item.reviewed[y0:y0 + block, x0:x0 + block].mean() >= 0.9:
                cand.append((y0, x0, y0 + block, x0 + block))
    if fraction <= 0 or len(cand) < 3:
        item.holdout = []
        return []
    rng = np.random.default_rng(seed)
    n = max(1, int(round(fraction * len(cand))))
    chosen = [cand[i] for i in sorted(rng.choice(len(cand), n, replace=False))]
    for y0, x0, y1, x1 in chosen:
        item.reviewed[y0:y1, x0:x1] = False
    keep = _inside(item.reviewed, item.points)
    item.holdout = chosen
    item._val = (item.points.copy(), item.labels.copy())  # fine points incl. the held-out ones
    item.points, item.labels = item.points[keep], item.labels[keep]
    return chosen


def holdout_truth(item: MixedImage, blk) -> tuple[np.ndarray, np.ndarray]:
    """True points (and labels) inside a held-out block, in image px."""
    pts, lab = getattr(item, "_val", (item.points, item.labels))
    y0, x0, y1, x1 = blk
    k = (pts[:, 0] >= y0 - 0.5) & (pts[:, 0] < y1 - 0.5) & (pts[:, 1] >= x0 - 0.5) & (pts[:, 1] < x1 - 0.5)
    return pts[k], lab[k]


def targets_of(item: MixedImage):
    """All training targets of the image: (points [T, 2], labels [T], weights [T]) = fine points
    (1) + user points outside reviewed (1) + pseudo points (soft weights) not near a user point."""
    P = [item.points, item.extra_points]
    L = [item.labels, item.extra_labels]
    W = [np.ones(len(item.points), np.float32), np.ones(len(item.extra_points), np.float32)]
    if len(item.pseudo_points):
        pp, pl, pw = item.pseudo_points, item.pseudo_labels, item.pseudo_weights
        if len(item.extra_points):
            from scipy.spatial import cKDTree

            d, _ = cKDTree(item.extra_points).query(pp, k=1)
            far = d > 6.0
            pp, pl, pw = pp[far], pl[far], pw[far]
        P.append(pp), L.append(pl), W.append(pw.astype(np.float32))
    return np.concatenate(P).astype(np.float32), np.concatenate(L).astype(np.int64), np.concatenate(W)


def holdout_mask(item: MixedImage) -> np.ndarray:
    m = np.zeros(item.shape, bool)
    for y0, x0, y1, x1 in item.holdout:
        m[y0:y1, x0:x1] = True
    return m


def unreviewed_area(item: MixedImage) -> np.ndarray:
    """Where pseudo labels may apply: not reviewed, not no-target, not held out."""
    return ~(item.reviewed | item.negative | holdout_mask(item))


def ignore_mask(item: MixedImage, pseudo_negatives: bool = True) -> np.ndarray:
    """Where unmatched proposals get no loss: outside reviewed and no-target areas, and outside
    kept pseudo patches when those are trusted as complete (``pseudo_negatives``)."""
    known = item.reviewed | item.negative
    if pseudo_negatives and item.pseudo is not None:
        known = known | item.pseudo
    return ~known


def sample_crop(item: MixedImage, kind: str, size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left (y0, x0) of a ``size`` crop centred on a random pixel of the ``kind`` mask
    (``fine`` = reviewed, ``pseudo``, ``negative``), clamped to the image."""
    mask = {"fine": item.reviewed, "negative": item.negative, "pseudo": item.pseudo}[kind]
    if mask is None:
        raise JobError(f"no {kind} area")
    step = 4
    ys, xs = np.nonzero(mask[::step, ::step])
    if len(ys) == 0:
        raise JobError(f"no {kind} area")
    i = int(rng.integers(len(ys)))
    cy, cx = ys[i] * step, xs[i] * step
    h, w = item.shape
    y0 = int(np.clip(cy - size // 2, 0, max(0, h - size)))
    x0 = int(np.clip(cx - size // 2, 0, max(0, w - size)))
    return y0, x0


def crop_at(item: MixedImage, y0: int, x0: int, size: int, rng: np.random.Generator, jitter: float,
            targets=None, ignore=None):
    """The ``size`` crop at (y0, x0) (white padding past the border) with a random dihedral
    transform and colour jitter. -> (crop float32 [3, s, s] in [0, 1], points [G, 2] normalised
    (y, x), labels [G], weights [G], ignore bool [s, s])."""
    pts, lab, wts = targets if targets is not None else targets_of(item)
    ign = ignore if ignore is not None else ignore_mask(item)
    im = item.image[y0:y0 + size, x0:x0 + size]
    ig = ign[y0:y0 + size, x0:x0 + size]
    ph, pw = size - im.shape[0], size - im.shape[1]
    if ph or pw:
        im = np.pad(im, ((0, ph), (0, pw), (0, 0)), constant_values=255)
        ig = np.pad(ig, ((0, ph), (0, pw)), constant_values=True)
    crop = im.astype(np.float32) / 255.0
    p = pts - np.array([y0, x0], np.float32)
    k = (p[:, 0] >= -0.5) & (p[:, 0] < size - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] < size - 0.5)
    p, lab, wts = p[k], lab[k], wts[k]
    for _ in range(int(rng.integers(0, 4))):  # rot90 counter-clockwise: (y, x) -> (S-1-x, y)
        crop, ig = np.rot90(crop), np.rot90(ig)
        p = np.stack([size - 1 - p[:, 1], p[:, 0]], 1)
    if rng.random() < 0.5:
        crop, ig = crop[:, ::-1], ig[:, ::-1]
        p = np.stack([p[:, 0], size - 1 - p[:, 1]], 1)
    if jitter > 0:
        crop = _jitter(crop, rng, jitter)
    norm = ((p + 0.5) / size).astype(np.float32)
    return (np.ascontiguousarray(crop.transpose(2, 0, 1)), norm.reshape(-1, 2), lab, wts.astype(np.float32),
            np.ascontiguousarray(ig))


def _jitter(im: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    gray = im.mean(-1, keepdims=True)
    im = gray + (im - gray) * (1 + rng.uniform(-2 * s, 2 * s))
    m = im.mean()
    im = m + (im - m) * (1 + rng.uniform(-s, s)) + rng.uniform(-s, s) * 0.5
    im = im * (1 + rng.uniform(-s / 2, s / 2, size=3)).astype(np.float32)
    return np.clip(im, 0, 1).astype(np.float32)
