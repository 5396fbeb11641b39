"""``histoai train-heatmap --slides DIR --labels labels.csv [--annotations DIR] --out MODEL``:
train a tumour-heatmap model by mixed supervision (slide labels + a few drawn regions)."""

from __future__ import annotations

import sys

from .options import json_line, positive_float, positive_int, unit_float


def add_parser(sub):
    from ..methods.heatmap.config import MODES, PRESETS

    p = sub.add_parser("train-heatmap", help="train a tumour heatmap from slide labels and a few drawn regions")
    p.add_argument("--slides", required=True, nargs="+", help="folder(s) or files of slides")
    p.add_argument("--labels", required=True, help="CSV with columns slide,label (tumour / normal) [,mpp]")
    p.add_argument("--annotations", default=None, metavar="DIR",
                   help="folder of GeoJSON tumour regions named like the slides (<slide>.geojson; QuPath exports work)")
    p.add_argument("--out", required=True, help="folder for the trained model")
    p.add_argument("--config", choices=sorted(PRESETS), default="compact",
                   help="compact (1 µm/px, minutes on a CPU) or paper (20x, 512 px patches)")
    p.add_argument("--mode", choices=MODES, default="mixed",
                   help="mixed (the paper), pixel (drawn regions only), image (slide labels only, top-k MIL)")
    p.add_argument("--rounds", type=positive_int, default=None, help="EM rounds (default 4)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps per round (default per config)")
    p.add_argument("--init-steps", type=positive_int, default=None, help="steps of round 0 on the drawn regions")
    p.add_argument("--top-k", type=positive_int, default=None, help="patches per slide for the slide score (default 16)")
    p.add_argument("--T", type=unit_float, default=None, help="E-step patch threshold (default 0.4)")
    p.add_argument("--V", type=positive_float, default=None, help="E-step re-weighting constant (default 4)")
    p.add_argument("--fusestyle", action="store_true", help="FuseStyle style mixing in the patch network")
    p.add_argument("--incomplete-annotations", action="store_true",
                   help="drawn slides may have tumour outside the drawn regions (then only drawn patches are fine labels)")
    return p


def run(args) -> int:
    from ..engine.devices import seed_everything
    from ..engine.jobs import tqdm_progress
    from ..methods.heatmap import config_from
    from ..tasks import train_heatmap

    seed_everything(args.seed)
    cfg = config_from(args.config, mode=args.mode, rounds=args.rounds, round_steps=args.steps,
                      init_steps=args.init_steps, K=args.top_k, T=args.T, V=args.V,
                      fusestyle=True if args.fusestyle else None,
                      annotations_complete=False if args.incomplete_annotations else None, seed=args.seed)
    with tqdm_progress("train-heatmap") as show:
        s = train_heatmap(args.slides, args.labels, args.out, annotations=args.annotations, config=cfg,
                          device=args.device, on_progress=show)
    for r in s["rounds"]:
        print(f"round {r['round']}: stage-1 loss {r['stage1_loss']:.3f}, stage-2 loss {r['stage2_loss']:.3f}, "
              f"{r['n_pseudo']} pseudo-labelled, {r['n_negative']} hard-negative patches", file=sys.stderr)
    print(f"kept round {s['best_round']} (lowest stage-2 loss); {s['slides']} slides, {s['annotated']} with drawn "
          f"regions; {s['seconds']:.0f} s -> {s['out']}", file=sys.stderr)
    for note in s["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(json_line(s))
    return 0
