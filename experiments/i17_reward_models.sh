#!/usr/bin/env bash
# Issue 17, item 1: rewards that know more than the policy, and their reward ceilings on the converged full-preset
# SFT policy. Per seed: the full preset through the ranker stage with every reward model (DIN; SASRec and GRU4Rec
# trained on training events only and Platt-calibrated; their logistic-stacked ensemble); the stage writes every
# reward model's ceiling on test (ranker/ceilings_test.md), then the same on valid (ranker/ceilings_valid.md).
#   SEEDS="0 1 2" experiments/i17_reward_models.sh
set -euo pipefail
SCORERS="din sasrec gru4rec ensemble"
for s in ${SEEDS:-0}; do
  run=runs/i17-rw-s$s
  rl-align run experiments/configs/paper.yaml --set 'stages=[data,embed,sids,sft,eval,exposure,ranker]' \
    --set "ranker.scorers=[${SCORERS// /,}]" --set 'ranker.ensemble_members=[din,sasrec,gru4rec]' \
    --set seed=$s --run-dir $run "$@"
  rl-align ranker eval $run --split valid --scorer $SCORERS
done
