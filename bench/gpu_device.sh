#!/usr/bin/env bash
# One device call: install the wheels that `make gpu-wheels` put in .whl/ (no network there), then time
# Wan2.1-1.3B at true size, vanilla diffusers vs vidfactory (bench/gpu_wan.py). Everything it prints, and
# the JSON, land in $OUT. Run from the repository root, e.g. with the device tool:
#   run(command="bash bench/gpu_device.sh", carry=[".whl"], timeout_s=580)
# GPU_WAN_ARGS passes options through (e.g. "--steps 20" when time is short, "--attention-only").
set -uo pipefail
out="${OUT:-/tmp/gpu_wan_out}"
mkdir -p "$out"
"${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "${PYTHON:-python3}" -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
  # shellcheck disable=SC2086 # GPU_WAN_ARGS is a list of options
  "${PYTHON:-python3}" bench/gpu_wan.py --json "$out/gpu_wan.json" ${GPU_WAN_ARGS:-}
} 2>&1 | tee "$out/gpu_wan.log"
