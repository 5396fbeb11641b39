"""Compare a result with a ground truth: the numbers of the Evaluate dock and ``histoai evaluate``.

Two kinds of input, never mixed:

* **points** (:class:`PointSet`): yx [N, 2] (y, x) px + optional classes. Predictions and truths
  are paired one-to-one within a radius given in µm (converted with the pixel size, µm/px) by
  :func:`metrics.pair_points`; the table holds F_d, P, R and per-class F_c (HoVer-Net's reference
  definition, :func:`metrics.classification_scores`).
* **labels**: integer instance images [H, W] (0 = background) of the same shape. The table holds
  Dice, AJI, PQ (DQ, SQ) and object-F1; objects are matched at IoU > 0.5 as in
  :func:`metrics.object_f1` and :func:`metrics.panoptic_quality`.

Every number comes from :mod:`metrics`; this module only selects the region, maps class names to
ids, and says which objects were matched, missed (truth without a prediction) or false
(prediction without a truth). Pure numpy: no Qt, no napari. Bad input raises a one-line
:class:`~napari_histoai.errors.JobError`.

Choices where the reference is silent:

* Points without classes (all ``nucleus`` / ``unlabeled`` / empty, or no class column) on either
  side: F_d, P and R are computed, F_c is left out and a note says why (not an error).
* Truth points of class ``unlabeled`` / ``nucleus`` in a classified truth count for detection
  only (``ignore`` of :func:`metrics.classification_scores`); such predictions never count as
  any class.
* A region: a bounding box ``(y0, x0, y1, x1)`` px (half-open), a boolean mask [H, W], or
  polygons (a list of [K, 2] (y, x) px arrays, their union). Points are kept when inside; label
  images are cropped to the region's bounding box and zeroed outside it (objects cut by the
  border are clipped, as in tile-wise evaluations).
* Binary label images (only 0 and 1) are split into connected components first, with a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from . import metrics
from .classes import KNOWN_COLORS
from .errors import JobError

__all__ = ["PointSet", "Evaluation", "evaluate", "evaluate_points", "evaluate_labels", "class_ids",
           "NO_CLASS", "format_value", "table_markdown", "table_to_csv"]

# class names that mean "a nucleus of unknown type": detection only
NO_CLASS = ("", "nucleus", "nuclei", "unlabeled", "unlabelled", "unknown", "none")


@dataclass
class PointSet:
    """Nuclei as points. yx: [N, 2] (y, x) px; classes: [N] class names (str) or class ids (int,
    negative = no class), or None when the points have no classes."""

    yx: np.ndarray
    classes: Optional[Sequence] = None

    def __len__(self) -> int:
        return len(np.asarray(self.yx).reshape(-1, 2))


@dataclass
class Evaluation:
    """The outcome of one comparison.

    kind: "points" or "labels".
    rows: [(metric, value)] in table order (values: float, int, or NaN when undefined).
    matched / missed / false:
      points: [M, 2] (y, x) px of matched predictions / of truths without a prediction / of
      predictions without a truth (in the frame of the inputs);
      labels: int images [h, w] of the matched predicted objects / missed truth objects / false
      predicted objects (ids as in the inputs, 0 elsewhere), whose pixel (0, 0) is the input's
      pixel ``origin``.
    matched_ids / missed_ids / false_ids: labels only: predicted / truth / predicted ids.
    origin: (y0, x0) px of the label images' corner ((0, 0) for points and whole images).
    mpp: µm/px used for the radius (points); radius_um / radius_px: the pairing radius.
    notes: one-line remarks for the user (F_c unavailable, binary masks split, ...).
    """

    kind: str
    rows: list
    matched: np.ndarray
    missed: np.ndarray
    false: np.ndarray
    matched_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    missed_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    false_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    origin: tuple = (0, 0)
    mpp: Optional[float] = None
    radius_um: Optional[float] = None
    radius_px: Optional[float] = None
    notes: list = field(default_factory=list)

    @property
    def table(self) -> dict:
        """{metric: value} in table order."""
        return dict(self.rows)

    def __getitem__(self, metric: str):
        return self.table[metric]


# ------------------------------------------------------------------ regions
def _region_kind(region):
    """(kind, value): None | ("bbox", (y0, x0, y1, x1)) | ("mask", bool [H, W]) | ("polygons", [[K, 2]])."""
    if region is None:
        return None, None
    if isinstance(region, np.ndarray) and region.dtype == bool and region.ndim == 2:
        return "mask", region
    if isinstance(region, (tuple, list)) and len(region) == 4 and all(np.ndim(v) == 0 for v in region):
        vals = [float(v) for v in region]
        if not all(math.isfinite(v) for v in vals):
            raise JobError(f"the region must be 4 finite numbers y0,x0,y1,x1 (px), got {region}")
        y0, x0, y1, x1 = vals
        if y1 <= y0 or x1 <= x0:
            raise JobError(f"the region y0,x0,y1,x1 = {','.join(f'{v:g}' for v in vals)} is empty (need y1 > y0 and x1 > x0)")
        return "bbox", (y0, x0, y1, x1)
    polys = [region] if isinstance(region, np.ndarray) and region.ndim == 2 else list(region)
    out = []
    for p in polys:
        p = np.asarray(p, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or not np.isfinite(p).all():
            raise JobError("a region polygon must be [K, 2] finite (y, x) px")
        if len(p) >= 3:
            out.append(p)
    if not out:
        raise JobError("the drawn region has no polygon with an area; draw a rectangle or polygon")
    return "polygons", out


def _inside(yx: np.ndarray, region) -> np.ndarray:
    """bool [N]: which points (y, x) px lie in ``region``."""
    kind, r = _region_kind(region)
    if kind is None:
        return np.ones(len(yx), bool)
    if kind == "bbox":
        y0, x0, y1, x1 = r
        return (yx[:, 0] >= y0) & (yx[:, 0] < y1) & (yx[:, 1] >= x0) & (yx[:, 1] < x1)
    if kind == "mask":
        iy, ix = np.round(yx[:, 0]).astype(np.int64), np.round(yx[:, 1]).astype(np.int64)
        ok = (iy >= 0) & (iy < r.shape[0]) & (ix >= 0) & (ix < r.shape[1])
        out = np.zeros(len(yx), bool)
        out[ok] = r[iy[ok], ix[ok]]
        return out
    from skimage.measure import points_in_poly

    out = np.zeros(len(yx), bool)
    for p in r:
        if len(yx):
            out |= points_in_poly(yx, p)
    return out


def _crop(shape: tuple, region) -> tuple[tuple, Optional[np.ndarray]]:
    """((y0, x0, y1, x1) px clipped to ``shape``, bool mask [y1-y0, x1-x0] or None) of a region."""
    h, w = shape
    kind, r = _region_kind(region)
    if kind is None:
        return (0, 0, h, w), None
    if kind == "mask":
        if r.shape != (h, w):
            raise JobError(f"the region mask is {r.shape[1]} x {r.shape[0]} px but the labels are {w} x {h} px")
        ys, xs = np.nonzero(r)
        if not len(ys):
            raise JobError("the region mask is empty")
        box = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
        return box, r[box[0]:box[2], box[1]:box[3]]
    if kind == "bbox":
        y0, x0, y1, x1 = r
    else:
        allp = np.concatenate(r)
        (y0, x0), (y1, x1) = np.floor(allp.min(0)), np.ceil(allp.max(0)) + 1
    box = (max(0, int(math.floor(y0))), max(0, int(math.floor(x0))), min(h, int(math.ceil(y1))), min(w, int(math.ceil(x1))))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise JobError(f"the region lies outside the image ({w} x {h} px)")
    if kind == "bbox":
        return box, None
    from .io.regions import rasterise_polygons

    mask = rasterise_polygons(r, (box[2] - box[0], box[3] - box[1]), origin=(box[0], box[1]))
    if not mask.any():
        raise JobError("the drawn region covers no pixel of the image")
    return box, mask


# ------------------------------------------------------------------ points
def _points(ps: PointSet, what: str) -> np.ndarray:
    yx = np.asarray(ps.yx, dtype=np.float64)
    if yx.size == 0:
        raise JobError(f"the {what} has no points")
    if yx.ndim != 2 or yx.shape[1] != 2:
        raise JobError(f"the {what} points must be [N, 2] (y, x) px, got shape {tuple(yx.shape)}")
    if not np.isfinite(yx).all():
        raise JobError(f"the {what} has NaN or infinite coordinates")
    if ps.classes is not None and len(ps.classes) != len(yx):
        raise JobError(f"the {what} has {len(yx)} points but {len(ps.classes)} classes")
    return yx


def class_ids(pred_classes, truth_classes, class_names: Optional[Sequence[str]] = None):
    """Class names (or ids) of both sides -> (pred ids [P], truth ids [G], names [K]).

    Strings: names in :data:`NO_CLASS` get -1 (no class); the others are ordered as in
    ``classes.KNOWN_COLORS`` (epithelial, inflammatory, fibroblast, others), then by first
    appearance (truth first), unless ``class_names`` gives the order. Integers are ids into
    ``class_names`` (default ``class 0``, ``class 1``...); negative = no class. ``None`` (a side
    without classes) gives all -1."""
    def as_list(c):
        return None if c is None else list(np.asarray(c, dtype=object).reshape(-1))

    pc, tc = as_list(pred_classes), as_list(truth_classes)
    values = (tc or []) + (pc or [])
    if values and all(isinstance(v, (int, np.integer)) for v in values):
        k = max(int(max(values)) + 1, len(class_names or ()))
        names = list(class_names) if class_names else [f"class {i}" for i in range(k)]
        if len(names) < k:
            raise JobError(f"class id {k - 1} has no name (only {len(names)} class names given)")

        def int_ids(c):
            return None if c is None else np.array([max(int(v), -1) for v in c], np.int64)

        return int_ids(pc), int_ids(tc), names
    norm = lambda c: None if c is None else [str(v).strip() for v in c]  # noqa: E731
    pc, tc = norm(pc), norm(tc)
    if class_names:
        names = list(class_names)
    else:
        seen = [v for v in dict.fromkeys((tc or []) + (pc or [])) if v.lower() not in NO_CLASS]
        known = {k: i for i, k in enumerate(KNOWN_COLORS)}
        names = sorted(seen, key=lambda n: (known.get(n.lower(), len(known)), seen.index(n)))
    index = {n: i for i, n in enumerate(names)}

    def ids(c):
        return None if c is None else np.array([index.get(v, -1) for v in c], np.int64)

    return ids(pc), ids(tc), names


def evaluate_points(pred: PointSet, truth: PointSet, mpp: Optional[float], radius_um: float = metrics.RADIUS_UM,
                    region=None, class_names: Optional[Sequence[str]] = None) -> Evaluation:
    """F_d, P, R (and per-class F_c when both sides have classes) of ``pred`` against ``truth``.

    pred, truth: points in the same px frame; mpp: µm/px of that frame (required: the radius is
    in µm); radius_um: pairing radius in µm (3 µm in the papers: 6 px at 0.5 µm/px); region:
    see the module docstring; class_names: the class order (default: see :func:`class_ids`)."""
    if mpp is None or not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise JobError("no pixel size: give the µm/px of the points (--mpp, or the dock's pixel size)")
    if not (math.isfinite(radius_um) and radius_um > 0):
        raise JobError(f"the radius must be a positive number of µm, got {radius_um}")
    p_yx, t_yx = _points(pred, "prediction"), _points(truth, "ground truth")
    radius = metrics.radius_px(mpp, radius_um)
    pin, tin = _inside(p_yx, region), _inside(t_yx, region)
    if not pin.any() and not tin.any():
        raise JobError("the region holds no points of either layer; choose another region or the whole image")
    p_yx, t_yx = p_yx[pin], t_yx[tin]
    p_ids, t_ids, names = class_ids(pred.classes, truth.classes, class_names)
    notes = []
    det = metrics.detection_scores(p_yx, t_yx, radius)
    pi, gi = metrics.pair_points(p_yx, t_yx, radius)
    rows = [("F_d", det["f1"]), ("P", det["precision"]), ("R", det["recall"])]
    has_p = p_ids is not None and (p_ids >= 0).any()
    has_t = t_ids is not None and (t_ids >= 0).any()
    if has_p and has_t and names:
        c = metrics.classification_scores(p_yx, p_ids[pin], t_yx, t_ids[tin], len(names), radius=radius, ignore=-1)
        rows += [(f"F_c {n}", float(v)) for n, v in zip(names, c["f_c"])]
        rows.append(("mean F_c", float(c["mean_f_c"])))
    else:
        side = " and ".join(s for s, ok in (("prediction", has_p), ("ground truth", has_t)) if not ok)
        notes.append(f"F_c not computed: the {side} points have no classes (F_d, P and R only)")
    rows += [("TP", int(det["tp"])), ("FP", int(det["fp"])), ("FN", int(det["fn"])),
             ("truth nuclei", int(len(t_yx))), ("predicted nuclei", int(len(p_yx))),
             ("radius µm", float(radius_um)), ("radius px", float(radius)), ("µm/px", float(mpp))]
    um_p = np.ones(len(p_yx), bool)
    um_p[pi] = False
    um_t = np.ones(len(t_yx), bool)
    um_t[gi] = False
    return Evaluation("points", rows, matched=p_yx[~um_p], missed=t_yx[um_t], false=p_yx[um_p],
                      mpp=float(mpp), radius_um=float(radius_um), radius_px=float(radius), notes=notes)


# ------------------------------------------------------------------ labels
def _label_image(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise JobError(f"the {what} is not a label image: expected [H, W] instance ids, got shape {tuple(a.shape)}")
    if a.dtype == bool:
        a = a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all() or (a != np.round(a)).any():
            raise JobError(f"the {what} is not a label image: its values are not whole numbers ({a.dtype})")
        a = a.astype(np.int64)
    if (a < 0).any():
        raise JobError(f"the {what} has negative label ids")
    if a.max(initial=0) == 0:
        raise JobError(f"the {what} has no objects (all background)")
    return a


def _split_binary(a: np.ndarray, what: str, notes: list) -> np.ndarray:
    if a.max() == 1:
        from scipy import ndimage

        lab, n = ndimage.label(a > 0)
        if n > 1:
            notes.append(f"the {what} is a binary mask: split into {n} connected components")
            return lab
    return a


def _keep(img: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.where(np.isin(img, ids), img, 0).astype(img.dtype, copy=False)


def evaluate_labels(pred, truth, region=None) -> Evaluation:
    """Dice, AJI, PQ (DQ, SQ) and object-F1 of the instance image ``pred`` [H, W] against
    ``truth`` [H, W] (same shape, px), within ``region`` (see the module docstring).

    Matched / missed / false objects: pairs at IoU > 0.5 (unique by construction), the rule of
    :func:`metrics.object_f1`."""
    notes: list = []
    p, t = _label_image(pred, "prediction"), _label_image(truth, "ground truth")
    if p.shape != t.shape:
        raise JobError(f"the prediction is {p.shape[1]} x {p.shape[0]} px but the ground truth is "
                       f"{t.shape[1]} x {t.shape[0]} px; compare labels of the same image")
    p, t = _split_binary(p, "prediction", notes), _split_binary(t, "ground truth", notes)
    (y0, x0, y1, x1), mask = _crop(t.shape, region)
    p, t = p[y0:y1, x0:x1], t[y0:y1, x0:x1]
    if mask is not None:
        p, t = np.where(mask, p, 0), np.where(mask, t, 0)
    if not p.any() and not t.any():
        raise JobError("the region holds no objects of either layer; choose another region or the whole image")
    pq = metrics.panoptic_quality(t, p)
    gt_ids, pr_ids, inter, ga, pa = metrics.iou_matrix(t, p)
    iou = inter / np.maximum(ga[:, None] + pa[None, :] - inter, 1) if inter.size else np.zeros((len(ga), len(pa)))
    gi, pj = np.nonzero(iou > 0.5)
    matched_p, matched_t = pr_ids[pj], gt_ids[gi]
    missed_ids = np.setdiff1d(gt_ids, matched_t)
    false_ids = np.setdiff1d(pr_ids, matched_p)
    rows = [("Dice", metrics.dice(p, t)), ("AJI", metrics.aji(t, p)), ("PQ", float(pq["pq"])),
            ("DQ", float(pq["dq"])), ("SQ", float(pq["sq"])), ("object-F1", metrics.object_f1(t, p)),
            ("matched", int(len(matched_p))), ("missed", int(len(missed_ids))), ("false", int(len(false_ids))),
            ("truth objects", int(len(gt_ids))), ("predicted objects", int(len(pr_ids)))]
    return Evaluation("labels", rows, matched=_keep(p, matched_p), missed=_keep(t, missed_ids),
                      false=_keep(p, false_ids), matched_ids=np.sort(matched_p), missed_ids=missed_ids,
                      false_ids=false_ids, origin=(int(y0), int(x0)), notes=notes)


def evaluate(pred, truth, mpp: Optional[float] = None, radius_um: float = metrics.RADIUS_UM, region=None,
             class_names: Optional[Sequence[str]] = None) -> Evaluation:
    """Points (:class:`PointSet`) or label images [H, W], the same kind on both sides; see
    :func:`evaluate_points` (mpp in µm/px and radius in µm are used there) and
    :func:`evaluate_labels`."""
    kp, kt = isinstance(pred, PointSet), isinstance(truth, PointSet)
    if kp != kt:
        a, b = ("points", "a label image") if kp else ("a label image", "points")
        raise JobError(f"cannot compare {a} (prediction) with {b} (ground truth): choose two of the same kind")
    if kp:
        return evaluate_points(pred, truth, mpp, radius_um, region, class_names)
    return evaluate_labels(pred, truth, region)


# ------------------------------------------------------------------ output
def format_value(v) -> str:
    """A table cell: ints as is, floats with 4 decimals, NaN as ``n/a``."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "n/a" if not math.isfinite(v) else f"{float(v):.4f}"
    return str(v)


def table_markdown(result: Evaluation) -> str:
    """The table as markdown (``| metric | value |``)."""
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {format_value(v)} |" for k, v in result.rows]
    return "\n".join(lines) + "\n"


def table_to_csv(result: Evaluation, path):
    """Write ``metric,value`` rows (NaN as an empty cell; full float precision), atomically."""
    import csv
    import io

    from .io.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["metric", "value"])
    for k, v in result.rows:
        if isinstance(v, (float, np.floating)):
            v = "" if not math.isfinite(v) else repr(float(v))
        w.writerow([k, v])
    return atomic_write_text(path, buf.getvalue())
