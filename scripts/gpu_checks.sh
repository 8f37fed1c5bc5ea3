#!/usr/bin/env bash
# The GPU checks, prepared as one short run for a machine with CUDA (the device tool lends one to
# some sessions, for 15 minutes in all; this takes ~3-5 min after the machine has started).
# Uses the machine's python3 (torch, timm, pytest, safetensors come with its image) and this
# checkout on PYTHONPATH. Every log goes under ${OUT:-gpu_checks}/.
#   1. tests/test_cuda.py with MNZOO_REQUIRE_CUDA=1: the layers against the float64 oracle (NCHW
#      and channels_last), torch.compile, autocast, a ResNet20 step against the CPU, a published
#      weight against its card (when ../shared/data is there), the benchmark script on CUDA.
#   2. benchmarks/norm_speed.py --device cuda, NCHW and channels_last: MN against nn.BatchNorm2d
#      on the GPU (the torch-op path), for benchmarks/README.md.
# Usage (device tool): bash scripts/gpu_checks.sh        exit status 1 if any step failed
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_checks}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
rc=0
MNZOO_REQUIRE_CUDA=1 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/test_cuda.txt" || rc=1
"$py" benchmarks/norm_speed.py --device cuda --reps 20 2>&1 | tee "$out/norm_speed_cuda_nchw.txt" || rc=1
"$py" benchmarks/norm_speed.py --device cuda --reps 20 --channels-last 2>&1 \
  | tee "$out/norm_speed_cuda_channels_last.txt" || rc=1
echo "gpu_checks: exit $rc, logs in $out/"
exit $rc
