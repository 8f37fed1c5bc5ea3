#!/usr/bin/env bash
# Move the CIFAR-10 files of ../shared/data to a lent GPU machine, whose checkout copy has no
# ../shared and takes at most 64 MiB of ignored files per call (the device tool's `carry`).
#   pack   [DATA]  (here) one tar of train.tar, test.tar and test-lossless-1k.tar from
#                  DATA (default ../shared/data/cifar10), split into gpu_data/cifar10.part-NN
#                  of 56 MiB (3 parts), plus gpu_data/SHA256SUMS of the three files.
#   unpack         (there, once every part is carried) join the parts, extract to
#                  gpu_data/cifar10/, check each file against SHA256SUMS (exit 1 on a mismatch)
#                  and drop the parts.
# Carry one part per call, back to back (a machine idle for ~30 s is handed back):
#   run carry=[gpu_data/cifar10.part-00, gpu_data/SHA256SUMS]  command="true"
#   run carry=[gpu_data/cifar10.part-01]                       command="true"
#   run carry=[gpu_data/cifar10.part-02]  command="bash scripts/gpu_data.sh unpack && <training>"
# Training then reads gpu_data/cifar10/*.tar: pass --train-data cifar10=gpu_data/cifar10/train.tar
# and --eval-data test-lossless-1k:cifar10=gpu_data/cifar10/test-lossless-1k.tar
# test-jpeg-10k:cifar10=gpu_data/cifar10/test.tar to training/train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
out=gpu_data
files=(train.tar test.tar test-lossless-1k.tar)
case ${1:-} in
  pack)
    src=${2:-../shared/data/cifar10}
    for f in "${files[@]}"; do [ -f "$src/$f" ] || { echo "gpu_data: $src/$f not found" >&2; exit 1; }; done
    rm -rf "$out" && mkdir -p "$out"
    (cd "$src" && sha256sum "${files[@]}") > "$out/SHA256SUMS"
    tar -C "$src" -cf - "${files[@]}" | split -b "${GPU_DATA_PART_SIZE:-56M}" -d -a 2 - "$out/cifar10.part-"
    ls -l "$out" ;;
  unpack)
    parts=("$out"/cifar10.part-*)
    [ -f "${parts[0]}" ] && [ -f "$out/SHA256SUMS" ] || { echo "gpu_data: no parts or SHA256SUMS in $out/" >&2; exit 1; }
    mkdir -p "$out/cifar10"
    cat "${parts[@]}" | tar -C "$out/cifar10" -xf -
    (cd "$out/cifar10" && sha256sum -c --quiet ../SHA256SUMS) || { echo "gpu_data: sha256 mismatch" >&2; exit 1; }
    rm -f "${parts[@]}"
    echo "gpu_data: ${files[*]} in $out/cifar10/ (sha256 checked)" ;;
  *) echo "usage: bash scripts/gpu_data.sh pack [DATA] | unpack" >&2; exit 2 ;;
esac
