#!/usr/bin/env bash
# Issue 24: the 64-wide SCI row with an item head beside the SID tokens (policy.item_head: free, the generative +
# dense hybrid of rl_align/policy/item_head.py; SFT weight 0.5, evaluation over the beam ∪ the head's top 50,
# β chosen on valid). The framework's version of the twenty-third session's probe
# (experiments/i24_item_softmax_probe.py --item-vectors free --union 50 --weight 0.5 --proj).
#   experiments/i24_item_head_runs.sh               # runs/i24-w64-ihead-s{0,1,2}
#   TAG=w64-ihead-ut experiments/i24_item_head_runs.sh --set 'sid.user_tokens=[gender,age,occupation]'
#                                                   # with the user's side features as prompt tokens
# Reference: runs/i24-w64base-sN (`experiments/i24_user_tokens_runs.sh reference`: the 64-wide row + SASRec-50).
# Table: python experiments/compare_with_baselines.py runs/i24-w64-ihead-s{0,1,2} --baselines-from
#   runs/i24-w64base-s{0,1,2} --other-policy "SCI SIDs, 64-wide" runs/i24-w64base-s{0,1,2}
#   --label "SCI SIDs, 64-wide + item head"
set -euo pipefail
W64=(--set policy.hidden_size=64 --set policy.num_heads=1 --set policy.intermediate_size=256)
TAG=${TAG:-w64-ihead} experiments/i24_sci_row.sh "${W64[@]}" --set policy.item_head=free "$@"
