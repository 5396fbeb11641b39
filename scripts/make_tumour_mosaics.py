"""Build the tumour / normal development slides (mosaics of real labelled H&E tiles) for slide
heatmaps: see :mod:`napari_histoai.devdata.tumour_mosaics` for the recipe and the layout.

    python scripts/make_tumour_mosaics.py [--data ../shared/data] [--out benchmarks/data/tumour_mosaics]
        [--n-train 24] [--n-eval 16] [--n-annotated 3] [--size 3072 | 3072x4096] [--seed 0]

The output is generated data: ``benchmarks/data/`` is git-ignored, never commit it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from napari_histoai.devdata.tumour_mosaics import make_tumour_mosaics
from napari_histoai.errors import JobError

ROOT = Path(__file__).resolve().parents[1]


def _size(text: str) -> tuple[int, int]:
    """``3072`` or ``3072x4096`` (H x W, level-0 px)."""
    try:
        parts = [int(v) for v in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 3072 or 3072x4096") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 3072 or 3072x4096")
    return parts[0], parts[1]


def _table(manifest: dict) -> str:
    rows = [("split", "slides", "tumour", "median tumour fraction")]
    for split in ("train", "eval"):
        s = [x for x in manifest["slides"] if x["split"] == split]
        fr = [x["tumour_fraction_of_tissue"] for x in s if x["label"] == "tumour"]
        med = f"{statistics.median(fr):.3f}" if fr else "-"
        rows.append((split, str(len(s)), str(sum(x["label"] == "tumour" for x in s)), med))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("HISTOAI_DATA", str(ROOT.parent / "shared" / "data")),
                    help="the shared data folder (default: $HISTOAI_DATA or ../shared/data)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "data" / "tumour_mosaics"),
                    help="output folder (default: benchmarks/data/tumour_mosaics)")
    ap.add_argument("--n-train", type=int, default=24, help="train slides, half tumour (default 24)")
    ap.add_argument("--n-eval", type=int, default=16, help="eval slides, half tumour (default 16)")
    ap.add_argument("--n-annotated", type=int, default=3,
                    help="tumour train slides with a GeoJSON annotation (default 3)")
    ap.add_argument("--size", type=_size, default=(3072, 3072), help="slide size H[xW], level-0 px (default 3072)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    def show(p) -> None:
        print(f"\r[{p.done}/{p.total}] {p.message}".ljust(60), end="", flush=True)

    t0 = time.perf_counter()
    try:
        manifest = make_tumour_mosaics(a.data, a.out, n_train=a.n_train, n_eval=a.n_eval, n_annotated=a.n_annotated,
                                       size=a.size, seed=a.seed, on_progress=show)
    except JobError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    print(f"\n{a.out}: {len(manifest['slides'])} slides of {a.size[0]} x {a.size[1]} px at {manifest['mpp']} µm/px, "
          f"seed {a.seed}, {time.perf_counter() - t0:.1f} s")
    print(_table(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
