#!/usr/bin/env bash
# One device call on a host with several GPUs: install the wheels that `make gpu-wheels` put in .whl/
# (no network there), then time one video on 1 GPU vs split across all of them (bench/gpu_parallel.py).
# Everything it prints, and the JSON, land in $OUT. Run from the repository root; GPUS defaults to every
# GPU nvidia-smi lists. GPU_PARALLEL_ARGS passes options through (e.g. "--steps 20").
set -uo pipefail
out="${OUT:-/tmp/gpu_parallel_out}"
mkdir -p "$out"
"${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:bench PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
gpus="${GPUS:-$(nvidia-smi --list-gpus | wc -l)}"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  # shellcheck disable=SC2086 # GPU_PARALLEL_ARGS is a list of options
  "${PYTHON:-python3}" -m torch.distributed.run --nproc_per_node="$gpus" bench/gpu_parallel.py \
    --json "$out/gpu_parallel.json" ${GPU_PARALLEL_ARGS:-}
} 2>&1 | tee "$out/gpu_parallel.log"
