#!/usr/bin/env bash
# The GPU checks, prepared as one short run for a machine with CUDA (the device tool lends one to
# some sessions, for 15 minutes in all). Uses the machine's python3 (torch, timm, pytest,
# safetensors come with its image) and this checkout on PYTHONPATH. Logs go under ${OUT:-gpu_checks}/.
#   tests     tests/test_cuda.py with MNZOO_REQUIRE_CUDA=1: the layers against the float64 oracle
#             (NCHW and channels_last), torch.compile, autocast, a ResNet20 step against the CPU,
#             a published weight against its card (when ../shared/data is there), and the
#             benchmark scripts once on CUDA.
#   layers    benchmarks/norm_speed.py --device cuda, NCHW and channels_last: MN against
#             nn.BatchNorm2d on the GPU (the torch-op path); benchmarks/norm_memory.py --device
#             cuda: bytes kept for backward and the allocator's peak, per layer and for ResNet20.
#   training  benchmarks/train_speed.py --device cuda, eager and with CUDA graphs
#             (--compile-mode reduce-overhead): ResNet20 BN / MN steps, i.e. whether the paper's
#             160 epochs fit a lease.
# Usage (device tool): bash scripts/gpu_checks.sh [tests] [layers] [training]   (default: all three)
# Exit status 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_checks}
py=${PYTHON:-python3}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tests layers training)
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
rc=0
for s in "${steps[@]}"; do
  case $s in
    tests)
      MNZOO_REQUIRE_CUDA=1 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 \
        | tee "$out/test_cuda.txt" || rc=1 ;;
    layers)
      "$py" benchmarks/norm_speed.py --device cuda --reps 20 2>&1 | tee "$out/norm_speed_cuda_nchw.txt" || rc=1
      "$py" benchmarks/norm_speed.py --device cuda --reps 20 --channels-last 2>&1 \
        | tee "$out/norm_speed_cuda_channels_last.txt" || rc=1
      "$py" benchmarks/norm_memory.py --device cuda 2>&1 | tee "$out/norm_memory_cuda.txt" || rc=1 ;;
    training)
      for mode in eager reduce-overhead; do
        "$py" benchmarks/train_speed.py --device cuda --compile-mode $mode --rounds 3 --steps 20 2>&1 \
          | tee "$out/train_speed_cuda_$mode.txt" || rc=1
      done ;;
    *) echo "unknown step $s (tests, layers, training)" >&2; rc=2 ;;
  esac
done
echo "gpu_checks: exit $rc, logs in $out/"
exit $rc
