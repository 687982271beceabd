#!/usr/bin/env bash
# Extraction end to end on a lent GPU machine, prepared as one command that fits its minutes
# (docs/benchmarks.md, "GPU end to end: the prepared run"). Here, once: `make gpu-wheels` (what the
# machine's image lacks: PyAV, Hydra, MLflow's client, as wheels in .whl). There, from the repository
# root, with .whl carried:
#     bash benchmarks/gpu_end_to_end.sh
# It prints and writes to $OUT/extraction_gpu.md (outputs/gpu without $OUT) benchmarks/extraction.py's
# GPU tables: the loader against the decode ceiling (1 reader, one per core, resized in the readers),
# extract.py end to end (swin3d_t, T=8: the defaults, bf16-mixed + channels_last + resize on the device,
# with torch.compile, and at 1, 2, 4 and 8 readers) against min(model alone, all-core decode), the
# model alone per precision, and CUDA's resize against the CPU's pixels.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-outputs/gpu}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vidlab-site .whl/*.whl
    export PYTHONPATH="/tmp/vidlab-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
timeout "${BUDGET_S:-540}" python3 benchmarks/extraction.py --sections loader,e2e,model --codecs h264 \
    --videos 32 --seconds 60 --single-videos 2 --reps 1 --e2e-clips 1600 --data /tmp/vidlab-bench \
    --out "$out/extraction_gpu.md"
