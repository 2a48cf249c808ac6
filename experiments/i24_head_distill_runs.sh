#!/usr/bin/env bash
# Issue 24: the item-head row (64-wide SCI row + policy.item_head: free) with the item head distilled from SASRec-50
# (sft.distill_into: item_head): the teacher's next-item distribution at every training event is a soft target of
# the head's full softmax, beside its cross-entropy on the true item. Two teachers:
#   own  = the run's own SASRec-50 (the reference row's baselines stage, runs/i24-w64-ihead-sN/baselines/sasrec)
#   bag3 = the three reference runs' SASRec-50 (seeds 0, 1, 2; sft.distill_bag): the softmax of their mean
#          log-probabilities, a teacher stronger than any one SASRec
# Needs the reference row: experiments/i24_item_head_future_runs.sh reference (runs/i24-w64-ihead-s{0,1,2}).
#   experiments/i24_head_distill_runs.sh screen               # seed 0 of own and bag3 (choose on valid HR@10)
#   TEACHER=bag3 experiments/i24_head_distill_runs.sh seeds   # SEEDS (default 1 2) of the pick
# Extra arguments go to rl-align run; SUFFIX names such a variant's runs, e.g.
#   SUFFIX=-w0.25 TEACHER=bag3 SEEDS="0 1 2" experiments/i24_head_distill_runs.sh seeds --set sft.distill_weight=0.25
# Runs: runs/i24-w64-ihead-kd$TEACHER$SUFFIX-sN.
# Table: python experiments/compare_with_baselines.py runs/i24-w64-ihead-kdbag3-s{0,1,2} --baselines-from
#   runs/i24-w64-ihead-s{0,1,2} --other-policy "item head" runs/i24-w64-ihead-s{0,1,2} --label "item head + KD"
set -euo pipefail
what=${1:?screen | seeds}; shift
W64=(--set policy.hidden_size=64 --set policy.num_heads=1 --set policy.intermediate_size=256)
ref() { echo "runs/i24-w64-ihead-s$1/baselines/sasrec"; }
for s in 0 1 2; do test -f "$(ref $s)/model.safetensors" || { echo "missing $(ref $s): run the reference row" >&2; exit 1; }; done
one() {  # teacher seed [extra rl-align args]
  local t=$1 s=$2 teach=()
  shift 2
  case "$t" in
    own) teach=(--set "sft.distill_from=$(ref $s)") ;;
    bag3) teach=(--set "sft.distill_from=$(ref 0)" --set "sft.distill_bag=[$(ref 1),$(ref 2)]") ;;
    *) echo "unknown teacher $t (own | bag3)" >&2; return 1 ;;
  esac
  rl-align run experiments/configs/full.yaml --set 'stages=[data,embed,sids,sft,eval]' \
    --set embed.source=npy --set embed.npy_path=runs/sci-l1-s$s/retrieval/item_view.npy --set embed.cf_dim=0 \
    "${W64[@]}" --set policy.item_head=free --set sft.distill_into=item_head --set sft.distill_weight=1 \
    "${teach[@]}" --set seed=$s --run-dir runs/i24-w64-ihead-kd$t${SUFFIX:-}-s$s "$@"
}
case "$what" in
  screen) for t in ${TEACHERS:-own bag3}; do one "$t" 0 "$@"; done ;;
  seeds) : "${TEACHER:?set TEACHER to the pick}"; for s in ${SEEDS:-1 2}; do one "$TEACHER" "$s" "$@"; done ;;
  *) echo "expected screen or seeds, got $what" >&2; exit 1 ;;
esac
