#!/usr/bin/env bash
# Paper Table 1 (LeNet, multi-domain, N=128): every normaliser and seed as one training run each.
# Usage: training/sweeps/table1_lenet.sh OUTPUT_DIR RUN [RUN ...]
#   RUN is <model>[:K]:<seed>, e.g. lenet_mn:2:0, lenet_bn:0.
# Runs whose metrics.json exists are skipped, so the script can be re-run to resume a sweep.
# Each run uses one thread (LeNet is small; two sweeps side by side fill a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$1; shift
for run in "$@"; do
  IFS=: read -r model a b <<<"$run"
  if [ -n "$b" ]; then k=$a; seed=$b; else k=""; seed=$a; fi
  name="$model${k:+_k$k}-multidomain-s$seed"
  if [ -f "$out/$name/metrics.json" ]; then echo "skip $name (done)"; continue; fi
  extra=()
  [ -n "$k" ] && extra=(--model-kwargs "num_modes=$k")
  echo "== $name"
  .venv/bin/python training/train.py --config training/recipes/lenet_multidomain.yaml \
    --model "$model" "${extra[@]}" --seed "$seed" --threads 1 --output "$out" --experiment "$name" \
    > "$out/$name.log" 2>&1 || { echo "FAILED $name (see $out/$name.log)"; }
done
