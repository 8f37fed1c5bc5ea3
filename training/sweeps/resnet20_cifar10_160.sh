#!/usr/bin/env bash
# Paper Table 4, CIFAR-10 rows, at the paper's schedule: resnet20_mn (K=2) and resnet20_bn for
# 160 epochs with lr steps at 80 and 120 (training/recipes/resnet20_cifar10.yaml), seed 0, and
# their publication as resnet20_{mn,bn}.cifar10.
#
# Usage:
#   training/sweeps/resnet20_cifar10_160.sh train OUT
#       Start both runs, or resume each from OUT/<run>/last.pth.tar, side by side with one thread
#       each (that fills a 2-core machine; ~13 h per run there), and wait for both. Finished runs
#       (metrics.json present) are skipped, so re-running the command continues where it stopped.
#   training/sweeps/resnet20_cifar10_160.sh publish OUT
#       Export both finished runs to $WEIGHTS/resnet20_{mn,bn}.cifar10 (model.safetensors,
#       config.json, model card) with their manifest entries, keep the runs' logs in
#       $LOGS/resnet20_{mn,bn}.cifar10/, check the folders and rewrite the model table of $README.
#       Then, by hand: docs/reproduction.md and docs/weights.md, `mnzoo publish`.
#   training/sweeps/resnet20_cifar10_160.sh report OUT [--update FILE --marker NAME]
#       Where both runs stand, finished or not (summarize.py --curves): epochs done, lr, and each
#       eval set's top-1 at the last epoch and averaged over the last 5; with --update, the table
#       also replaces FILE's block between <!-- NAME --> and <!-- /NAME -->.
# Runs are OUT/resnet20_{mn,bn}-cifar10-160ep-s0, logs OUT/<run>.log. The cards' deviation texts
# below describe the CPU runs that `train` makes; runs made another way need their own export.
# Environment: WEIGHTS (default weights_cards), LOGS (default training/logs), README (default
# README.md), TRAIN_ARGS (more
# train.py flags for new runs, e.g. a smaller data set in tests; not used when resuming).
set -euo pipefail
cd "$(dirname "$0")/../.."
verb=${1:?usage: $0 train|publish|report OUT} out=${2:?usage: $0 train|publish|report OUT}
WEIGHTS=${WEIGHTS:-weights_cards} LOGS=${LOGS:-training/logs} README=${README:-README.md}
recipe=training/recipes/resnet20_cifar10.yaml
run_name() { echo "resnet20_$1-cifar10-160ep-s0"; }

train() {
  mkdir -p "$out"
  local pids=() names=() m name extra
  for m in mn bn; do
    name=$(run_name $m)
    if [ -f "$out/$name/metrics.json" ]; then echo "skip $name (done)"; continue; fi
    if [ -f "$out/$name/last.pth.tar" ]; then
      echo "== resume $name"
      .venv/bin/python training/train.py --resume "$out/$name/last.pth.tar" --threads 1 --channels-last \
        >> "$out/$name.log" 2>&1 &
    else
      echo "== start $name"
      read -r -a extra <<<"${TRAIN_ARGS:-}"
      .venv/bin/python training/train.py --config "$recipe" --model "resnet20_$m" --seed 0 --threads 1 \
        --channels-last --log-interval 0 "${extra[@]}" --output "$out" --experiment "$name" \
        >> "$out/$name.log" 2>&1 &
    fi
    pids+=($!) names+=("$name")
  done
  local i failed=0
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "FAILED ${names[$i]} (see $out/${names[$i]}.log)"; failed=1; }
  done
  return $failed
}

publish() {
  local m name run common
  for m in mn bn; do
    run=$out/$(run_name $m)
    [ -f "$run/metrics.json" ] || { echo "$run has no metrics.json: the run is not finished" >&2; exit 1; }
  done
  common=(
    "Trained on a shared 2-core CPU VM (AMD EPYC) in fp32 and channels_last, one thread per run, with resnet20_mn and resnet20_bn training side by side; MN ran on mnzoo's fused CPU kernels. The paper trained on GPUs."
    "The accuracy reported is the last epoch's (the published weights); one seed (0). The paper reports the mean of several runs."
    "Two test sets: the lossless 1k subset of the CIFAR-10 test set (exact pixels; the card's first metric), and the complete 10k test set re-encoded as JPEG (mean abs. pixel error ~6/255), which lowers accuracy."
  )
  for m in mn bn; do
    name=resnet20_$m.cifar10 run=$out/$(run_name $m)
    local k_text=""; [ $m = mn ] && k_text=", MN with K=2"
    .venv/bin/mnzoo export "$name" --checkpoint "$run/last.pth.tar" --metrics "$run/metrics.json" \
      --recipe "$recipe" --out "$WEIGHTS" --register \
      --deviation "None in the schedule: the paper's 160 epochs, lr 0.1 divided by 10 at epochs 80 and 120, batch 128, SGD momentum 0.9, weight decay 1e-4, running-estimate momentum 0.1, 4-pixel padded random crops and flips$k_text (Sec. 4.2, following He et al. 2016). Not stated in the paper, our choice: plain (non-Nesterov) momentum, weight decay on every parameter, per-channel normalisation with the train-set statistics." \
      --deviation "${common[0]}" --deviation "${common[1]}" --deviation "${common[2]}" \
      --limitation "Wall time on a shared VM: it includes the other run beside it and any other jobs." \
      --limitation "Trained in several segments, one per working session, each resumed from the last epoch's checkpoint with train.py --resume (which continues a run exactly; tested). The wall time adds up each segment up to its last checkpoint (an epoch cut off by the end of a session is not counted), including pauses (SIGSTOP) while tests ran on the same machine." \
      --limitation "The 40-epoch GPU weights published under this name before are resnet20_$m.cifar10_40ep."
    mkdir -p "$LOGS/$name"
    rm -f "$LOGS/$name/metrics_cpu_eval.json"  # belonged to the GPU-trained 40-epoch weights
    cp "$run/summary.csv" "$run/metrics.json" "$run/config.yaml" "$LOGS/$name/"
    .venv/bin/mnzoo check "$WEIGHTS/$name"
  done
  .venv/bin/mnzoo table --update "$README"
  echo "next: docs/reproduction.md (Table 4) and docs/weights.md (the pending switch); mnzoo publish"
}

report() {
  .venv/bin/python training/sweeps/summarize.py --curves "$out/$(run_name mn)" "$out/$(run_name bn)" --last 5 \
    "${@:3}"
}

case $verb in
  train) train ;;
  publish) publish ;;
  report) report "$@" ;;
  *) echo "unknown verb $verb: use train, publish or report" >&2; exit 2 ;;
esac
