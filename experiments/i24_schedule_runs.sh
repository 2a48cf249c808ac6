#!/usr/bin/env bash
# Issue 24, the SFT optimiser on the 64-wide SCI row (experiments/i24_sci_row.sh with SASRec's width): peak
# learning rate and weight decay, the two schedule knobs the ablation table had not varied (the preset: lr 3e-3,
# AdamW weight decay 0.01, batch 64, warm-up then cosine to 10%). The reference row is runs/i24-w64base-sN
# (experiments/i24_user_tokens_runs.sh reference).
#   experiments/i24_schedule_runs.sh screen                # seed 0: lr 1e-3, lr 1e-2, weight decay 0.1
#   SCREEN=lr1e-3-nostop experiments/i24_schedule_runs.sh screen   # lr 1e-3 without early stopping
#   SCREEN="bs128 bs256 untied" experiments/i24_schedule_runs.sh screen   # batch size (SASRec's is 128) and an
#                                                                        # output head apart from the input embeddings
#   SETTING=lr1e-3 experiments/i24_schedule_runs.sh seeds  # seeds 1 2 of the valid pick
# Table: python experiments/compare_with_baselines.py runs/i24-w64-$SETTING-s{0,1,2} --baselines-from
#   runs/i24-w64base-s{0,1,2} --other-policy "SCI SIDs, 64-wide" runs/i24-w64base-s{0,1,2}
set -euo pipefail
declare -A SETTINGS=(
  [lr1e-3]="--set sft.lr=0.001"
  [lr1e-3-nostop]="--set sft.lr=0.001 --set sft.patience=20"
  [lr1e-2]="--set sft.lr=0.01"
  [wd0.1]="--set sft.weight_decay=0.1"
  [bs128]="--set sft.batch_size=128"
  [bs256]="--set sft.batch_size=256"
  [untied]="--set policy.tie_embeddings=false"
)  # setting name -> its --set flags
DEFAULT_SCREEN="lr1e-3 lr1e-2 wd0.1"
# shellcheck source=experiments/w64_row_lib.sh
source "$(dirname "$0")/w64_row_lib.sh"
w64_rows "$@"
