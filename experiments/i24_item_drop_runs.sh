#!/usr/bin/env bash
# Issue 24, sequence augmentation on the 64-wide SCI row: `sft.item_drop` deletes each item of a training window
# but its last with probability p, drawn afresh each epoch, so the policy sees every target after many gapped
# histories (CL4SRec's "crop/mask" family; the policy overfits past 20 epochs, ablation table). The reference row is
# runs/i24-w64base-sN (experiments/i24_user_tokens_runs.sh reference).
#   experiments/i24_item_drop_runs.sh screen                 # seed 0: p = 0.1, 0.2, 0.3
#   SETTING=drop0.2 experiments/i24_item_drop_runs.sh seeds  # seeds 1 2 of the valid pick
# Table: python experiments/compare_with_baselines.py runs/i24-w64-$SETTING-s{0,1,2} --baselines-from
#   runs/i24-w64base-s{0,1,2} --other-policy "SCI SIDs, 64-wide" runs/i24-w64base-s{0,1,2}
set -euo pipefail
declare -A SETTINGS=(
  [drop0.1]="--set sft.item_drop=0.1"
  [drop0.2]="--set sft.item_drop=0.2"
  [drop0.3]="--set sft.item_drop=0.3"
  [drop0.2-e40]="--set sft.item_drop=0.2 --set sft.epochs=40 --set sft.patience=20"
)  # setting name -> its --set flags
DEFAULT_SCREEN="drop0.1 drop0.2 drop0.3"
# shellcheck source=experiments/w64_row_lib.sh
source "$(dirname "$0")/w64_row_lib.sh"
w64_rows "$@"
