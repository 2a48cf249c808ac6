#!/usr/bin/env bash
# Issue 24, item-level input compression: `sid.history: items` writes each history item as one token (SASRec's one
# position per item) while the next item is still generated as SID tokens under the trie, on the 64-wide SCI row
# (experiments/i24_sci_row.sh). The reference row is experiments/i24_user_tokens_runs.sh reference.
#   experiments/i24_history_items_runs.sh screen            # seed 0: items; items + 50-item history; items + SASRec init
#   SETTING=items experiments/i24_history_items_runs.sh seeds   # seeds 1 2 of the valid pick (seed 0 from the screen)
#   SCREEN="items-drop items-h50-drop" experiments/i24_history_items_runs.sh screen   # + SASRec's dropout set
# Table: python experiments/compare_with_baselines.py runs/i24-w64-$SETTING-s{0,1,2} --baselines-from
#   runs/i24-w64base-s{0,1,2} --other-policy "SCI SIDs, 64-wide" runs/i24-w64base-s{0,1,2}
# The SASRec init reads the reference row's own SASRec-50 (training split only): run the reference first.
set -euo pipefail
W64=(--set policy.hidden_size=64 --set policy.num_heads=1 --set policy.intermediate_size=256)
# SASRec's dropout set (embedding, attention and every sub-layer output at 0.2) on top of SASRec's input
DROP="--set policy.embedding_dropout=0.2 --set policy.attention_dropout=0.2 --set policy.hidden_dropout=0.2"
args_for() {  # setting name, seed -> its --set flags
  case "$1" in
    items) echo "--set sid.history=items" ;;
    items-h50) echo "--set sid.history=items --set data.max_history=50" ;;
    items-sasinit) echo "--set sid.history=items --set sft.item_token_init=runs/i24-w64base-s$2/baselines/sasrec" ;;
    items-drop) echo "--set sid.history=items $DROP" ;;
    items-h50-drop) echo "--set sid.history=items --set data.max_history=50 $DROP" ;;
    *) echo "unknown setting $1" >&2; return 1 ;;
  esac
}
what=${1:?screen | seeds}; shift
case "$what" in
  screen)
    for s in ${SCREEN:-items items-h50 items-sasinit}; do
      # shellcheck disable=SC2046
      TAG=w64-$s SEEDS=0 experiments/i24_sci_row.sh "${W64[@]}" $(args_for "$s" 0) "$@"
    done ;;
  seeds)
    : "${SETTING:?}"
    for seed in ${SEEDS:-1 2}; do
      # shellcheck disable=SC2046
      TAG=w64-$SETTING SEEDS=$seed experiments/i24_sci_row.sh "${W64[@]}" $(args_for "$SETTING" "$seed") "$@"
    done ;;
esac
