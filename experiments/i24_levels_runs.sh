#!/usr/bin/env bash
# Issue 24, SID depth on the 64-wide SCI row (experiments/i24_sci_row.sh with SASRec's width): RQ-KMeans levels ×
# codebook size, collisions reassigned as in the preset (3 × 32). The reference row is runs/i24-w64base-sN
# (experiments/i24_user_tokens_runs.sh reference).
#   experiments/i24_levels_runs.sh screen                 # seed 0: 2 × 64 and 4 × 16
#   SETTING=l2x64 experiments/i24_levels_runs.sh seeds    # seeds 1 2 of the valid pick
# Table: python experiments/compare_with_baselines.py runs/i24-w64-$SETTING-s{0,1,2} --baselines-from
#   runs/i24-w64base-s{0,1,2} --other-policy "SCI SIDs, 64-wide" runs/i24-w64base-s{0,1,2}
set -euo pipefail
declare -A SETTINGS=(
  [l2x64]="--set sid.levels=2 --set sid.codebook_size=64"
  [l4x16]="--set sid.levels=4 --set sid.codebook_size=16"
)  # setting name -> its --set flags
DEFAULT_SCREEN="l2x64 l4x16"
# shellcheck source=experiments/w64_row_lib.sh
source "$(dirname "$0")/w64_row_lib.sh"
w64_rows "$@"
