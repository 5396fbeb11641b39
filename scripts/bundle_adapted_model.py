"""Copy the full CyC-PDAM row of ``benchmarks/bench_adapt.py`` into ``resources/models/cycpdam-he``
with its measured numbers in config.json and a model card.

    python benchmarks/bench_adapt.py --threads 2 --rows "+ TR (full)"   # trains runs/adapt/models/tr-full
    python scripts/bundle_adapted_model.py ["+ stain and zoom augmentation (ours)"]   # which row
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"+ TR (full)": "tr-full", "+ stain and zoom augmentation (ours)": "stain-and-zoom-augmentation-ours"}
DST = ROOT / "resources" / "models" / "cycpdam-he"
RESULTS = ROOT / "benchmarks" / "results" / "adapt.json"


def main() -> int:
    row_name = sys.argv[1] if len(sys.argv) > 1 else "+ TR (full)"
    SRC = ROOT / "runs" / "adapt" / "models" / ROWS[row_name]
    res = json.loads(RESULTS.read_text())
    row, base = res["rows"][row_name], res["rows"]["Otsu (hematoxylin) + watershed"]
    cfg = json.loads((SRC / "config.json").read_text())
    c = cfg["config"]
    metrics = {k: round(row[k], 4) for k in ("aji", "f1_inst", "obj_f1", "pq", "f1_all", "mp_per_s")}
    cfg["metrics"] = {"monuseg_train_unlabelled_targets": metrics, "baseline_otsu_hematoxylin_watershed":
                      {k: round(base[k], 4) for k in ("aji", "f1_inst", "obj_f1", "pq", "f1_all")}}
    tmp = DST.with_name(DST.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(SRC, tmp)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    s = res["setup"]
    (tmp / "MODEL_CARD.md").write_text(f"""# cycpdam-he: default H&E nuclei instance segmenter (CyC-PDAM, compact)

- **Method**: CyC-PDAM (Liu et al., CVPR 2020): nuclei instance segmentation of H&E learned from
  labelled fluorescence with no H&E labels. Pixel level: CycleGAN from inverted fluorescence to
  H&E ({c['gan_steps']} steps, {c['gan_crop']} px crops, generator width {c['gan_width']} with
  {c['gan_blocks']} residual blocks, identity loss {c['gan_identity']} and our brightness-correlation
  loss {c['gan_structure']}) and nuclei inpainting (Otsu on hematoxylin, Telea radius 3). Feature
  level: torchvision Mask R-CNN on a small GroupNorm ResNet + FPN ({cfg['architecture']['fpn']}
  channels) with a panoptic semantic head; image-, semantic- and instance-level discriminators
  behind gradient reversal; task re-weighting (beta {c['beta']}, floor {c['tr_floor']}).
  {c['steps']} Mask R-CNN steps (SGD lr {c['lr']}, momentum {c['momentum']}, weight decay
  {c['weight_decay']}), {c['crop']} px crops, one source + one target image a step, seed {c['seed']}.
- **Resolution**: {c['mpp']} µm/px; other resolutions are resampled by the engine. Tiles of
  {c['tile_size']} px overlapping by {c['overlap']} px; detections with score >= {c['score_threshold']} (chosen without labels: the
  threshold whose nuclear area matches Otsu on hematoxylin over the target images), up to
  {c.get('rpn_test_post', 2000)} RPN proposals per tile,
  masks at {c['mask_threshold']}, fragments under {c['min_area']} px dropped.
- **Data**: source: {s['sources']} labelled fluorescence images ({s['source_nuclei']} nuclei) of
  DSB2018 stage 1 (BBBC038), BBBC039 crops and one StarDist DSB image (all CC0), each rescaled so
  its median nucleus is {c['nucleus_um']} µm wide (+-{int(c['scale_jitter'] * 100)} %). Target:
  the 30 MoNuSeg 2018 training tiles (40x, taken as 0.25 µm/px), used without their labels.
- **Measured** (`python benchmarks/bench_adapt.py --threads 2`, medians over tiles; the target
  images were seen unlabelled in training, as in the paper's protocol): AJI {metrics['aji']:.3f},
  pixel-F1 {metrics['f1_inst']:.3f}, object-F1 {metrics['obj_f1']:.3f}, PQ {metrics['pq']:.3f} on the 13
  instance-labelled tiles; pixel-F1 {metrics['f1_all']:.3f} on all 30. Otsu on hematoxylin +
  watershed on the same tiles: AJI {base['aji']:.3f}, pixel-F1 {base['f1_inst']:.3f}. Inference
  {metrics['mp_per_s']:.2f} MP/s (level-0 px at 0.25 µm/px) on 2 CPU threads.
- **Training**: {row['train_s'] / 60:.0f} min on 2 shared CPU cores (torch {s['torch']}).
- **Limits**: a small model trained from scratch on CPU for minutes; the paper's config (ResNet-50,
  20k steps, a GPU) is available as `--config paper`. Nuclei are assumed to be about
  {c['nucleus_um']} µm wide; tissues with much larger or smaller nuclei lose accuracy.
""")
    if DST.exists():
        shutil.rmtree(DST)
    tmp.rename(DST)
    print(f"bundled {DST} ({sum(f.stat().st_size for f in DST.iterdir()) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
