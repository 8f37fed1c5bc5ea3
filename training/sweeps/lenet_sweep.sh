#!/usr/bin/env bash
# One training run per <model>[:K]:<seed> of a LeNet recipe (paper Tables 1 and 2).
# Usage: training/sweeps/lenet_sweep.sh RECIPE TAG OUTPUT_DIR RUN [RUN ...] [-- TRAIN_ARGS ...]
#   RECIPE a file in training/recipes/, TAG names the runs: <model>[_k<K>]-<TAG>-s<seed>.
#   RUN is <model>[:K]:<seed>, e.g. lenet_mn:2:0, lenet_bn:0.
#   TRAIN_ARGS (after --) go to every train.py call, e.g. -- --batch-size 16; the table*.sh wrappers
#   pass their own "-- TRAIN_ARGS" through (e.g. a quick check: -- --train-subset 640).
# Runs whose metrics.json exists are skipped, so the script can be re-run to resume a sweep.
# Each run uses one thread (LeNet is small; two sweeps side by side fill a 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
recipe=$1 tag=$2 out=$3; shift 3
runs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do runs+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the --
# TRAIN_ARGS with the -- a wrapper's own arguments brought: the wrapper's -- markers are dropped
train_args=()
for a in "$@"; do [ "$a" = "--" ] || train_args+=("$a"); done
mkdir -p "$out"
for run in "${runs[@]}"; do
  IFS=: read -r model a b <<<"$run"
  if [ -n "$b" ]; then k=$a; seed=$b; else k=""; seed=$a; fi
  name="$model${k:+_k$k}-$tag-s$seed"
  if [ -f "$out/$name/metrics.json" ]; then echo "skip $name (done)"; continue; fi
  extra=()
  [ -n "$k" ] && extra=(--model-kwargs "num_modes=$k")
  echo "== $name"
  .venv/bin/python training/train.py --config "training/recipes/$recipe" \
    --model "$model" "${extra[@]}" "${train_args[@]}" --seed "$seed" --threads 1 --output "$out" --experiment "$name" \
    > "$out/$name.log" 2>&1 || { echo "FAILED $name (see $out/$name.log)"; }
done
