"""``histoai evaluate PRED TRUTH [--radius-um 3] [--mpp UM] [--region y0,x0,y1,x1] [--csv out.csv]``:
compare a result with a ground truth of the same kind and print the table as markdown.

* Points (``.csv`` ``y,x[,class]`` or ``.geojson``/``.json``, level-0 px): F_d, P, R and
  per-class F_c within ``--radius-um`` (µm, converted with the pixel size: ``--mpp``, else the
  ``mpp`` the files state, as our exports write it).
* Label images (any other file: ``.tif``/``.ome.tif``/``.png``..., instance ids, 0 = background):
  Dice, AJI, PQ and object-F1.

Notes (e.g. F_c unavailable because the points have no classes) go to stderr; bad input is one
line and exit code 2. The numbers come from :mod:`napari_histoai.evaluation` (i.e. ``metrics``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import JobError
from .options import parse_region, positive_float

POINT_SUFFIXES = (".csv", ".geojson", ".json")


def add_parser(sub):
    p = sub.add_parser("evaluate", help="F_d/F_c or Dice/AJI/PQ of a result against a ground truth")
    p.add_argument("pred", help="the result: points .csv/.geojson, or an instance label image (.tif, .png...)")
    p.add_argument("truth", help="the ground truth, of the same kind as PRED")
    p.add_argument("--radius-um", type=positive_float, default=3.0, metavar="UM",
                   help="pairing radius for points in µm (default 3, the papers' protocol)")
    p.add_argument("--mpp", type=positive_float, default=None, metavar="UM_PER_PX",
                   help="pixel size of the points' frame in µm/px (default: the mpp the files state)")
    p.add_argument("--region", default=None, help="y0,x0,y1,x1 in level-0 px (default: everything)")
    p.add_argument("--csv", default=None, metavar="OUT.csv", help="also write the table as metric,value CSV")
    return p


def is_points_file(path) -> bool:
    return str(path).lower().endswith(POINT_SUFFIXES)


def _stated_mpp(path: Path):
    """The µm/px a points file states (our CSV ``mpp`` column, our GeoJSON ``properties.mpp``)."""
    from ..io.points import finite_number, read_csv_rows, read_json

    if path.suffix.lower() == ".csv":
        rows = read_csv_rows(path)
        head = [h.strip().lower() for h in rows[0]] if rows else []
        if "mpp" in head:
            i = head.index("mpp")
            for r in rows[1:]:
                if i < len(r) and r[i].strip():
                    try:
                        v = float(r[i])
                    except ValueError:
                        raise JobError(f"{path.name}: the mpp column must be a number of µm/px, got {r[i]!r}") from None
                    return v if v > 0 else None
        return None
    doc = read_json(path)
    props = doc.get("properties") if isinstance(doc, dict) else None
    v = finite_number(props.get("mpp")) if isinstance(props, dict) else None
    return v if v and v > 0 else None


def read_points_file(path: Path):
    """A PointSet (level-0 px, class names) and the mpp the file states (or None)."""
    from ..evaluation import PointSet
    from ..io.points import read_points

    t = read_points(path)
    return PointSet(t.yx, list(t.classes)), _stated_mpp(path)


def read_label_file(path: Path):
    """Instance ids [H, W] of a label image and its mpp (or None)."""
    import numpy as np

    from ..io import open_image

    with open_image(path) as img:
        if img.n_channels != 1:
            raise JobError(f"{path.name} is not a label image: it has {img.n_channels} channels "
                           "(expected one channel of instance ids)")
        h, w = img.shape[:2]
        return np.asarray(img.read_region(0, 0, h, w))[..., 0], img.mpp


def _pixel_size(args, pred_mpp, truth_mpp, pred: Path, truth: Path):
    if args.mpp is not None:
        return args.mpp
    if pred_mpp and truth_mpp and abs(pred_mpp - truth_mpp) > 1e-3 * truth_mpp:
        raise JobError(f"{pred.name} says {pred_mpp:g} µm/px but {truth.name} says {truth_mpp:g} µm/px; "
                       "compare points of the same image level (or pass --mpp)")
    return truth_mpp or pred_mpp


def run(args) -> int:
    from ..evaluation import evaluate, table_markdown, table_to_csv

    pred, truth = Path(args.pred), Path(args.truth)
    for p in (pred, truth):
        if not p.exists():
            raise JobError(f"no such file: {p}")
    if args.csv and not args.csv.lower().endswith(".csv"):
        raise JobError(f"--csv must end with .csv, got {args.csv}")
    region = parse_region(args.region)
    kp, kt = is_points_file(pred), is_points_file(truth)
    if kp != kt:
        a, b = (pred.name, truth.name) if kp else (truth.name, pred.name)
        raise JobError(f"cannot compare points ({a}) with a label image ({b}): give two files of the same kind")
    if kp:
        (p, p_mpp), (t, t_mpp) = read_points_file(pred), read_points_file(truth)
        mpp = _pixel_size(args, p_mpp, t_mpp, pred, truth)
        if mpp is None:
            raise JobError("no pixel size: the points files state none; pass --mpp (µm/px) for the radius in µm")
    else:
        (p, _), (t, _) = read_label_file(pred), read_label_file(truth)
        mpp = args.mpp
    result = evaluate(p, t, mpp=mpp, radius_um=args.radius_um, region=region)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    sys.stdout.write(table_markdown(result))
    if args.csv:
        out = table_to_csv(result, args.csv)
        print(f"table -> {out}", file=sys.stderr)
    return 0
