"""``histoai detect IMAGE --out points.csv [--model NAME|PATH] [--region y0,x0,y1,x1]``."""

from __future__ import annotations

import sys

from ..errors import JobError


def parse_region(text: str | None):
    if not text:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise JobError(f"--region must be y0,x0,y1,x1 in level-0 pixels, got {text!r}") from None
    if len(vals) != 4:
        raise JobError(f"--region must have 4 numbers y0,x0,y1,x1, got {text!r}")
    return tuple(vals)


def add_parser(sub):
    p = sub.add_parser("detect", help="detect and classify nuclei; write CSV (y,x,class,score) or GeoJSON")
    p.add_argument("image", help="slide or image file")
    p.add_argument("--out", required=True, help="output .csv (y,x,class,score in level-0 px) or .geojson")
    p.add_argument("--model", default=None, help="bundled/user model name or model folder (default: bundled model; 'classical' = no weights)")
    p.add_argument("--region", default=None, help="y0,x0,y1,x1 in level-0 pixels (default: whole image, tissue only)")
    p.add_argument("--min-score", type=float, default=0.0, help="drop points scoring below this")
    p.add_argument("--all-tiles", action="store_true", help="also process background (non-tissue) tiles")
    p.add_argument("--batch-size", type=int, default=4)
    return p


def run(args) -> int:
    from ..engine.devices import seed_everything
    from ..engine.jobs import run_with_tqdm
    from ..io import open_image
    from ..io.points import write_points_csv, write_points_geojson
    from ..methods.detection.job import detect_image_job

    out = str(args.out)
    if not out.lower().endswith((".csv", ".geojson", ".json")):
        raise JobError("--out must end with .csv or .geojson")
    seed_everything(args.seed)
    region = parse_region(args.region)
    with open_image(args.image) as img:
        result = run_with_tqdm(
            detect_image_job(img, model=args.model, device=args.device, region=region,
                             tissue_only=not args.all_tiles and region is None,
                             batch_size=args.batch_size, min_score=args.min_score),
            desc="detect",
        )
    writer = write_points_geojson if out.lower().endswith((".geojson", ".json")) else write_points_csv
    writer(out, result.points, result.class_names, result.scores, mpp=result.mpp)
    counts = {c: int((result.class_ids == i).sum()) for i, c in enumerate(result.classes)}
    print(f"{len(result)} nuclei ({', '.join(f'{c} {n}' for c, n in counts.items())}) with {result.model} -> {out}",
          file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
