#!/usr/bin/env bash
# Issue 19: DPO, S-DPO and RAD-DPO (+ its ablations) from the converged full-preset SFT policy (runs/fix-full-sN,
# from experiments/item_token_runs.sh), on copies runs/i19-sN so the SFT runs stay as they were.
# Pairs: each user's 3 latest training events; positives y* + the next 2 training events; 3 negatives, half exposed
# non-clicks, half the SFT policy's beam. Every method: 40 steps × 128 prompts (1.8 passes), validation every 5 steps,
# the best step on valid is tested (step 0 = the SFT policy counts).
# 1. lr per method on seed 0's *valid* HR@10: {2e-5, 5e-5, 1e-4} (tags <algo>-lr<lr>);
# 2. every seed and method at its chosen lr (ablations at rad_dpo's), tags dpo, sdpo, rad_dpo, rad_dpo-no-<part>.
# Table: python experiments/dpo_table.py runs/i19-s{0,1,2}
# Usage: experiments/rad_dpo_runs.sh [SEEDS] [ABLATION_SEEDS]   (default "0 1 2" for both)
set -euo pipefail
SEEDS=${1:-"0 1 2"}
ABL_SEEDS=${2:-"0 1 2"}
COMMON=(--set rl.steps=40 --set rl.cpus_per_learner=2 --set rl.eval_every=5 --set rl.checkpoint_every=20
        --set rl.preference.positives_window=3 --set rl.preference.negatives=3)
RAD=(--set rl.preference.beta=2.0 --set rl.preference.gamma=0.5)
declare -A BETA=([dpo]="--set rl.preference.beta=0.1" [sdpo]="--set rl.preference.beta=0.1" [rad_dpo]="${RAD[*]}")
train() {  # seed tag algo lr [more --set ...]
  local s=$1 tag=$2 algo=$3 lr=$4; shift 4
  rl-align dpo train experiments/configs/full.yaml --algo "$algo" --set seed=$s --set rl.tag=$tag --set rl.lr=$lr \
    "${COMMON[@]}" --run-dir runs/i19-s$s "$@"
}
for s in $SEEDS; do test -d runs/i19-s$s || cp -r runs/fix-full-s$s runs/i19-s$s; done
declare -A LR
for algo in dpo sdpo rad_dpo; do
  for lr in 0.00002 0.00005 0.0001; do
    train 0 $algo-lr$lr $algo $lr ${BETA[$algo]}
  done
  LR[$algo]=$(python - "$algo" <<'PY'
import json, sys
from pathlib import Path
algo = sys.argv[1]
best = max((json.loads((d / "summary.json").read_text())["best_valid_hr@10"], d.name.split("-lr")[1])
           for d in Path("runs/i19-s0/rl").glob(f"{algo}-lr*") if (d / "summary.json").exists())
print(best[1])
PY
)
  echo "lr chosen on seed 0 valid for $algo: ${LR[$algo]}"
done
for s in $SEEDS; do
  for algo in dpo sdpo rad_dpo; do train $s $algo $algo ${LR[$algo]} ${BETA[$algo]}; done
  if [[ " $ABL_SEEDS " == *" $s "* ]]; then
    train $s rad_dpo-no-tlgd rad_dpo ${LR[rad_dpo]} "${RAD[@]}" --set rl.preference.tlgd=false
    train $s rad_dpo-no-rdrw rad_dpo ${LR[rad_dpo]} "${RAD[@]}" --set rl.preference.rdrw=false
    train $s rad_dpo-no-mlgc rad_dpo ${LR[rad_dpo]} "${RAD[@]}" --set rl.preference.mlgc=false
    train $s rad_dpo-no-sft rad_dpo ${LR[rad_dpo]} "${RAD[@]}" --set rl.preference.sft_weight=0
  fi
done
