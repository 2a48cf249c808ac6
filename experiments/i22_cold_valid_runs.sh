#!/usr/bin/env bash
# Issue 22 on ML-100K: the within-bucket scorer chosen with a cold-valid part (eval.cold_valid_share = 0.5: the cases
# of half the held-out items choose, the other half's are reported as cold). No retraining: the runs are the SA²CRQ
# preset's (runs/i22h-hybrid-sN, with the SASRec reward model) and RQ-KMeans 3×32's (runs/i22t-rqk-sN); every split is
# evaluated with the cold expansion, all routes, at the measured α, for the six candidate scorers of
# experiments/i22_blend_scorer_runs.sh.
#   experiments/i22_cold_valid_runs.sh                       # seeds 0-2 (SEEDS overrides); about 1 min an evaluation
# Table and the valid-side rule's choice (one --group per candidate, files named in docs/results.md):
#   python experiments/sa2crq_table.py --choose --group "RQ-KMeans 3×32" \
#     runs/i22t-rqk-s{0,1,2}/eval/metrics_sft_cold-expansion_all-routes_cold-valid0.5.json --group ...
set -euo pipefail
E="--split all --cold-expansion --cold-routes all --cold-valid-share 0.5"
for s in ${SEEDS:-0 1 2}; do
  rl-align eval runs/i22t-rqk-s$s $E
  rl-align eval runs/i22h-hybrid-s$s $E
  for t in 0.5 1; do
    rl-align eval runs/i22h-hybrid-s$s $E --bucket-scorer reward:sasrec --bucket-temperature "$t"
  done
  for t in 0.5 1 2; do
    rl-align eval runs/i22h-hybrid-s$s $E --bucket-scorer reward:sasrec+content --bucket-temperature "$t"
  done
done
