#!/usr/bin/env bash
# Issue 19: DPO, S-DPO and RAD-DPO (+ its ablations) from the converged full-preset SFT policy (runs/fix-full-sN,
# from experiments/item_token_runs.sh), on copies runs/i19-sN so the SFT runs stay as they were.
# Pairs: each user's 3 latest training events; positives y* + the next 2 training events; 3 negatives, half exposed
# non-clicks, half the SFT policy's beam. Every method: 40 steps × 128 prompts (1.8 passes), lr 1e-4, best step on valid (step 0 = the SFT policy counts).
# Table: python experiments/dpo_table.py runs/i19-s{0,1,2}
# Usage: experiments/rad_dpo_runs.sh [SEEDS] [ABLATION_SEEDS]   (default "0 1 2" and "0")
set -euo pipefail
SEEDS=${1:-"0 1 2"}
ABL_SEEDS=${2:-"0"}
COMMON=(--set rl.steps=40 --set rl.lr=0.0001 --set rl.cpus_per_learner=2 --set rl.eval_every=10
        --set rl.checkpoint_every=20 --set rl.preference.positives_window=3 --set rl.preference.negatives=3)
train() {  # seed tag algo [more --set ...]
  local s=$1 tag=$2 algo=$3; shift 3
  rl-align dpo train experiments/configs/full.yaml --algo "$algo" --set seed=$s --set rl.tag=$tag "${COMMON[@]}" \
    --run-dir runs/i19-s$s "$@"
}
for s in $SEEDS; do
  test -d runs/i19-s$s || cp -r runs/fix-full-s$s runs/i19-s$s
  train $s dpo dpo --set rl.preference.beta=0.1
  train $s sdpo sdpo --set rl.preference.beta=0.1
  RAD=(--set rl.preference.beta=2.0 --set rl.preference.gamma=0.5)
  train $s rad_dpo rad_dpo "${RAD[@]}"
  if [[ " $ABL_SEEDS " == *" $s "* ]]; then
    train $s rad_dpo-no-tlgd rad_dpo "${RAD[@]}" --set rl.preference.tlgd=false
    train $s rad_dpo-no-rdrw rad_dpo "${RAD[@]}" --set rl.preference.rdrw=false
    train $s rad_dpo-no-mlgc rad_dpo "${RAD[@]}" --set rl.preference.mlgc=false
    train $s rad_dpo-no-sft rad_dpo "${RAD[@]}" --set rl.preference.sft_weight=0
  fi
done
