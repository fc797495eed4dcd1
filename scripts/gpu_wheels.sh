#!/usr/bin/env bash
# Wheels for a bare GPU host with no network that has Python and a CUDA PyTorch but nothing of ours:
# vidfactory itself and the packages bench/gpu_wan.py and the Wan engine import beyond torch, pinned as
# pyproject.toml pins them. Usage: scripts/gpu_wheels.sh [DIR] [PYTHON_VERSION]   (default .whl, 3.12)
set -euo pipefail
dir="${1:-.whl}"
python_version="${2:-3.12}"
pip="${PIP:-python3 -m pip}"
rm -rf "$dir" && mkdir -p "$dir"
# Pure-Python or abi3 wheels only; --no-deps so that nothing pulls a second torch.
$pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dir" \
  "diffusers==0.42.1" "transformers==5.23.0" "torchao>=0.14,<0.19" "importlib_metadata>=8" "zipp>=3.20" \
  "regex>=2025.10.22" "tokenizers>=0.23.1,<0.24" "huggingface-hub>=1.32,<2" "safetensors>=0.8" \
  "peft>=0.21.2,<0.22" "accelerate>=1.10" "psutil>=5.9" "pyyaml>=6" "packaging>=24" "tqdm>=4.66"
$pip wheel --quiet --no-deps --no-build-isolation -w "$dir" .
ls -l "$dir"
du -sh "$dir"
