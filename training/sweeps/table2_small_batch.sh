#!/usr/bin/env bash
# Paper Table 2 (LeNet, multi-domain, N=8, 50k updates): BN, MN, GN, MGN, one run per seed.
# Usage: [BATCH=4|8|16] training/sweeps/table2_small_batch.sh OUTPUT_DIR RUN [RUN ...] [-- TRAIN_ARGS ...]
#   RUN is <model>[:K]:<seed>, e.g. lenet_mgn:0, lenet_gn:1; runs are named
#   <model>[_k<K>]-smallbatch<BATCH>-s<seed> and resume as in lenet_sweep.sh. BATCH defaults to
#   the recipe's 8 (the paper's rows are N = 4, 8, 16, each for 50k updates).
set -euo pipefail
batch=${BATCH:-8}
out=$1; shift
exec "$(dirname "$0")/lenet_sweep.sh" lenet_small_batch.yaml "smallbatch$batch" "$out" "$@" -- --batch-size "$batch"
