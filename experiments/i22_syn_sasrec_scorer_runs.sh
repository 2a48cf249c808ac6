#!/usr/bin/env bash
# Issue 22 on the synthetic catalog: SASRec's term inside the buckets of the hybrid-code runs (no policy retraining).
# Per seed: the exposure stage (its held-out impressions calibrate the reward; about 11 min), a SASRec reward model
# on the training events only (rl-align ranker scorers, the run's baseline settings, early stopping; about 3 min an
# epoch over 100,000 items), then one beam search per split and the buckets expanded under content T_c = 0.2 (valid's
# earlier choice) and SASRec alone or over the saved content scorer at T = 0.5 / 1 / 2 (about 10 min).
#   SEEDS="0" experiments/i22_syn_sasrec_scorer_runs.sh     # the screen; then SEEDS="1 2"
# Plan and rule: docs/results.md, "SASRec's term inside the synthetic catalog's buckets".
set -euo pipefail
for s in ${SEEDS:-0 1 2}; do
  R=runs/i22-syn-bucket-hybrid-s$s
  rl-align run "$R/config.yaml" --run-dir "$R" --set 'stages=[data,embed,sids,sft,eval,exposure]'
  [ -f "$R/ranker/scorers/sasrec/scorer.json" ] || rl-align ranker scorers "$R" sasrec
  python experiments/bucket_scorer_choice.py "$R" --temperatures 0.2 --reward-models sasrec sasrec+content \
    --reward-temperatures 0.5 1 2 | tee "$R/eval/bucket_scorer_choice_sasrec.md"
done
