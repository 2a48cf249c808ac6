#!/usr/bin/env bash
# Issue 24, SASRec's dropout on the SID policy: `policy.hidden_dropout` (each attention / MLP output, before its
# residual add), alone and with embedding and attention dropout at SASRec's rate, on the 64-wide SCI row
# (experiments/i24_sci_row.sh). The reference row is experiments/i24_user_tokens_runs.sh reference.
#   experiments/i24_dropout_runs.sh screen                 # seed 0: hidden 0.1 / 0.2 / 0.3, and all three at 0.2
#   SCREEN="hd0.2-e40 hd0.3-e40" experiments/i24_dropout_runs.sh screen   # dropout with a 40-epoch schedule, no early stop
#   SETTING=hd0.2 experiments/i24_dropout_runs.sh seeds    # seeds 1 2 of the valid pick (seed 0 from the screen)
# Table: python experiments/compare_with_baselines.py runs/i24-w64-$SETTING-s{0,1,2} --baselines-from
#   runs/i24-w64base-s{0,1,2} --other-policy "SCI SIDs, 64-wide" runs/i24-w64base-s{0,1,2}
set -euo pipefail
declare -A SETTINGS=(
  [hd0.1]="--set policy.hidden_dropout=0.1"
  [hd0.2]="--set policy.hidden_dropout=0.2"
  [hd0.3]="--set policy.hidden_dropout=0.3"
  [hd0.2-e40]="--set policy.hidden_dropout=0.2 --set sft.epochs=40 --set sft.patience=20"
  [hd0.3-e40]="--set policy.hidden_dropout=0.3 --set sft.epochs=40 --set sft.patience=20"
  [all0.2]="--set policy.hidden_dropout=0.2 --set policy.embedding_dropout=0.2 --set policy.attention_dropout=0.2"
)  # setting name -> its --set flags
DEFAULT_SCREEN="hd0.1 hd0.2 hd0.3 all0.2"
# shellcheck source=experiments/w64_row_lib.sh
source "$(dirname "$0")/w64_row_lib.sh"
w64_rows "$@"
