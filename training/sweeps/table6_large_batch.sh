#!/usr/bin/env bash
# Paper Table 6 (appendix A; LeNet, multi-domain, the Table 1 recipe with larger batches N = 256,
# 512): BN, IN, LN and MN at K = 2, 4, 6, one run per seed. The recipe's schedule is in data
# touches, so a larger batch takes fewer updates, as in the paper.
# Usage: BATCH=256|512 training/sweeps/table6_large_batch.sh OUTPUT_DIR RUN [RUN ...] [-- TRAIN_ARGS ...]
#   RUN is <model>[:K]:<seed>, e.g. lenet_mn:4:0, lenet_bn:1; runs are named
#   <model>[_k<K>]-multidomain_n<BATCH>-s<seed> and resume as in lenet_sweep.sh.
set -euo pipefail
batch=${BATCH:?set BATCH=256 or BATCH=512, the rows of paper Table 6}
out=$1; shift
exec "$(dirname "$0")/lenet_sweep.sh" lenet_multidomain.yaml "multidomain_n$batch" "$out" "$@" -- --batch-size "$batch"
