#!/usr/bin/env bash
# On a lent GPU machine (tool library `device`): a profile of a detector training step, the CUDA
# tests, the rest of the suite (no GUI: napari is not there), then bench_gpu.py alone; logs under $OUT.
# Needs, carried: .whl (wheels of zarr, numcodecs, dask, distributed and their needs; .whl/extra: a
# JPEG/zlib-only imagecodecs) and .gpu/tdata (a subset of ../shared/data).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.whl/extra:$PWD/src:$PWD HISTOAI_DATA=$PWD/.gpu/tdata PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, imagecodecs, zarr, dask, tifffile, numpy, skimage; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'numpy', numpy.__version__, 'tifffile', tifffile.__version__, 'skimage', skimage.__version__)"
t0=$(date +%s)
timeout 80 python3 scripts/device/profile_detector_step.py --device cuda --batch 4 > "$OUT/profile_b4.txt" 2>&1
head -1 "$OUT/profile_b4.txt"; echo "profile $(( $(date +%s) - t0 ))s"
timeout 250 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$OUT/test_cuda.log" 2>&1 &
timeout 250 python3 -m pytest -q -p no:cacheprovider -m "not gui" -n 8 --continue-on-collection-errors --ignore=tests/test_cuda.py > "$OUT/suite.log" 2>&1 &
wait
echo "tests $(( $(date +%s) - t0 ))s"
timeout 200 python3 benchmarks/bench_gpu.py --devices cuda --tiles 2 --val 2 --threads 2 --out "$OUT/gpu" > "$OUT/bench_gpu.log" 2>&1; echo "bench_gpu rc=$? $(( $(date +%s) - t0 ))s"
tail -15 "$OUT/test_cuda.log"; grep -E "^(FAILED|ERROR)" "$OUT/suite.log" | cut -c1-160; tail -2 "$OUT/suite.log"; tail -12 "$OUT/bench_gpu.log"
