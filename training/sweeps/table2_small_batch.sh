#!/usr/bin/env bash
# Paper Table 2 (LeNet, multi-domain, N=8, 50k updates): BN, MN, GN, MGN, one run per seed.
# Usage: training/sweeps/table2_small_batch.sh OUTPUT_DIR RUN [RUN ...]
#   RUN is <model>[:K]:<seed>, e.g. lenet_mgn:0, lenet_gn:1; runs are named
#   <model>[_k<K>]-smallbatch8-s<seed> and resume as in lenet_sweep.sh.
set -euo pipefail
exec "$(dirname "$0")/lenet_sweep.sh" lenet_small_batch.yaml smallbatch8 "$@"
