#!/usr/bin/env bash
# Issue 24: the item head trained to predict the user's next k training items from each target's state
# (sft.item_head_future: k, a dense all-action loss) instead of the next one only. On ML-100K many ratings of a
# user share a session and their order inside it says little, so the next k items are a less noisy target for the
# state the head reads; SASRec (the reference) is trained on the next item only.
#   experiments/i24_item_head_future_runs.sh reference   # runs/i24-w64-ihead-s{0,1,2}: item head (k = 1) + SASRec-50
#   experiments/i24_item_head_future_runs.sh screen      # seed 0, k = 3 and 5 (choose on valid HR@10)
#   K=3 experiments/i24_item_head_future_runs.sh seeds   # SEEDS (default 1 2) of the pick
# Table: python experiments/compare_with_baselines.py runs/i24-w64-ihead-fut$K-s{0,1,2} --baselines-from
#   runs/i24-w64-ihead-s{0,1,2} --other-policy "item head, next item" runs/i24-w64-ihead-s{0,1,2}
#   --label "item head, next $K items"
set -euo pipefail
what=${1:?reference | screen | seeds}; shift  # anything after it is passed to rl-align run
case "$what" in
  reference)
    TAG=w64-ihead experiments/i24_item_head_runs.sh --set 'stages=[data,embed,sids,baselines,sft,eval]' \
      --set 'baseline.models=[sasrec]' --set baseline.max_len=50 "$@" ;;
  screen)
    for k in ${KS:-3 5}; do
      TAG=w64-ihead-fut$k SEEDS=0 experiments/i24_item_head_runs.sh --set sft.item_head_future=$k "$@"
    done ;;
  seeds)
    : "${K:?set K to the pick}"
    TAG=w64-ihead-fut$K SEEDS="${SEEDS:-1 2}" experiments/i24_item_head_runs.sh --set sft.item_head_future=$K "$@" ;;
esac
