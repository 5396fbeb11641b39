#!/usr/bin/env bash
# On a lent GPU machine: train AC-Former detector candidates side by side at a larger budget
# (e.g. --set batch_images=16), selecting checkpoints on the training hold-out; pack each run's
# best model, final EMA weights (float16) and log under $OUT for `--finalize` on the CPU machine.
# Needs carried: .gpu/crc (crchisto/train + classes.json of ../shared/data) and .gpu/dwhl (wheels
# of dask, partd and locket for Python 3.12: the hold-out evaluation reads images through dask).
#   bash scripts/device/train_detector_gpu.sh STEPS SECONDS ["NAME ARGS..." ...]
# Each quoted spec is one run (name, then train_default_detector.py options); default: plain,
# dense, dense-s1 (from scratch, batch 16).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
STEPS=${1:-2400}; SECS=${2:-480}; shift 2
specs=("$@")
[ ${#specs[@]} -eq 0 ] && specs=("plain --set batch_images=16" "dense --set batch_images=16 --set dense_head=true" "dense-s1 --set batch_images=16 --set dense_head=true --seed 1")
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/dwhl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src HISTOAI_DATA=$PWD/.gpu/crc PYTHONUNBUFFERED=1
nvidia-smi -L
common=(--device cuda --select-holdout --steps "$STEPS" --eval-every $((STEPS / 8)) --threads 2)
run() { n=$1; shift; timeout "$SECS" python3 scripts/train_default_detector.py --out "runs/gpu-$n" --log "runs/gpu-$n.jsonl" "${common[@]}" "$@" > "runs/gpu-$n.log" 2>&1; echo "$n rc=$?"; }
mkdir -p runs
names=()
for spec in "${specs[@]}"; do set -- $spec; names+=("$1"); run "$@" & done
wait
for n in "${names[@]}"; do
  tail -2 "runs/gpu-$n.log"
  python3 - "$n" <<'PY'
import sys, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
n = sys.argv[1]; d = Path(f"runs/gpu-{n}")
w = d / "weights.safetensors"
if w.is_file():  # float16 to travel (the package ships float16 too)
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(w)).items()}, str(w))
st = Path(f"runs/gpu-{n}.state/last.pt")
if st.is_file():
    s = torch.load(str(st), map_location="cpu", weights_only=True)
    torch.save({"ema": {k: (v.half() if v.is_floating_point() else v) for k, v in s["ema"].items()},
                "step": s["step"], "time": s["time"]}, str(d / "last_ema.pt"))
    print(n, "last step", s["step"], "time", round(s["time"]))
PY
  tar -cf "$OUT/gpu-$n.tar" -C runs "gpu-$n/config.json" "gpu-$n/weights.safetensors" "gpu-$n/last_ema.pt" "gpu-$n.jsonl" "gpu-$n.log" 2>/dev/null
done
ls -la "$OUT"
