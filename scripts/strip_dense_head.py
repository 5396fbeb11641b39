#!/usr/bin/env python
"""Write the base network of an AC-Former model whose dense head was trained afterwards: the same
weights without ``dense_head.*``, with the base network's own training record (``training.base``),
so a new head can be trained on it and its model card names the right base.

    python scripts/strip_dense_head.py runs/acformer-crc-s9 runs/base-nohead

``runs/acformer-crc-s9`` is the session-9 bundled model (``resources/models/acformer-crc`` at
commit 7a07baa); its base is the 4800-step CPU run.
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    from napari_histoai.errors import JobError
    from napari_histoai.models import load_checkpoint, save_checkpoint

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="AC-Former model folder or bundled name")
    ap.add_argument("out", help="folder to write the base network to")
    args = ap.parse_args()
    try:
        state, cfg = load_checkpoint(args.model, "acformer-detector")
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if cfg["architecture"].get("dense_backbone_lr_mult", 0) > 0:
        print(f"error: {args.model}'s backbone was tuned for its head; its base network is gone", file=sys.stderr)
        return 2
    base = (cfg.get("training") or {}).get("base")
    if not base:
        print(f"error: {args.model} records no base network (was its head trained afterwards?)", file=sys.stderr)
        return 2
    state = {k: v for k, v in state.items() if not k.startswith("dense_head.")}
    a = cfg["architecture"]
    a.update(dense_head=False, dense_only=False, dense_mix=0.0)
    a.update({k: base[k] for k in ("global_loss", "global_warmup", "global_weight", "teacher_threshold") if k in base})
    cfg["training"] = dict(base)
    cfg["metrics"] = {}
    cfg["name"] = f"{cfg.get('name', 'model')} (base network)"
    save_checkpoint(args.out, state, cfg)
    print(f"wrote {args.out} ({len(state)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
