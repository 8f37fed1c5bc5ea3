#!/usr/bin/env bash
# Paper Table 1 (LeNet, multi-domain, N=128): every normaliser and seed as one training run each.
# Usage: training/sweeps/table1_lenet.sh OUTPUT_DIR RUN [RUN ...] [-- TRAIN_ARGS ...]
#   RUN is <model>[:K]:<seed>, e.g. lenet_mn:2:0, lenet_bn:0; runs are named
#   <model>[_k<K>]-multidomain-s<seed> and resume as in lenet_sweep.sh.
set -euo pipefail
exec "$(dirname "$0")/lenet_sweep.sh" lenet_multidomain.yaml multidomain "$@"
