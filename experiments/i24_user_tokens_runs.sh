#!/usr/bin/env bash
# Issue 24, a signal SASRec does not have: the user's side features as prompt tokens (sid.user_tokens), on the
# 64-wide SCI row (experiments/i24_sci_row.sh). The reference row trains the in-run SASRec-50 beside it.
#   experiments/i24_user_tokens_runs.sh reference        # runs/i24-w64base-s{0,1,2}: 64-wide row + SASRec-50
#   experiments/i24_user_tokens_runs.sh screen           # seed 0, three feature sets (choose on valid)
#   FEATURES='[gender,age,occupation]' TAG=ut-profile experiments/i24_user_tokens_runs.sh seeds   # 3 seeds of the pick
# Table: python experiments/compare_with_baselines.py runs/i24-w64-$TAG-s{0,1,2} --baselines-from
#   runs/i24-w64base-s{0,1,2} --other-policy "SCI SIDs, 64-wide" runs/i24-w64base-s{0,1,2}
set -euo pipefail
W64=(--set policy.hidden_size=64 --set policy.num_heads=1 --set policy.intermediate_size=256)
what=${1:?reference | screen | seeds}; shift  # anything after it is passed to rl-align run
case "$what" in
  reference)
    TAG=w64base experiments/i24_sci_row.sh "${W64[@]}" --set 'stages=[data,embed,sids,baselines,sft,eval]' \
      --set 'baseline.models=[sasrec]' --set baseline.max_len=50 "$@" ;;
  screen)
    for f in '[gender,age,occupation]' '[user_id]' '[gender,age,occupation,user_id]'; do
      tag=ut-$(echo "$f" | tr -d '[]' | tr ',' '-')
      TAG=w64-$tag SEEDS=0 experiments/i24_sci_row.sh "${W64[@]}" --set "sid.user_tokens=$f" "$@"
    done ;;
  seeds)
    : "${FEATURES:?}" "${TAG:?}"
    TAG=w64-$TAG SEEDS="${SEEDS:-0 1 2}" experiments/i24_sci_row.sh "${W64[@]}" --set "sid.user_tokens=$FEATURES" "$@" ;;
esac
