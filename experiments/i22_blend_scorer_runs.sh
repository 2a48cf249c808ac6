#!/usr/bin/env bash
# Issue 22 on ML-100K: SASRec's term on top of the SA²CRQ preset's content scorer inside the buckets
# (`--bucket-scorer reward:sasrec+content`): P(item | code, user) ∝ (1 + count) · exp(cos / T_c) · σ(z)^(1/T).
# Re-uses the preset runs of experiments/i22_cold_routes_runs.sh that also ran the exposure and ranker stages with a
# SASRec scorer (the fifty-third session's command, in docs/results.md), and evaluates every split with the cold
# expansion, all routes, at each T; the reward-only and content-only files are re-made on this checkout beside them.
#   experiments/i22_blend_scorer_runs.sh                     # seeds 0-2, T = 0.5 1 2 (TEMPS, SEEDS, PREFIX override)
# Table: python experiments/sa2crq_table.py --group "RQ-KMeans 3×32"
#   runs/i22t-rqk-s{0,1,2}/eval/metrics_sft_cold-expansion_all-routes.json --group "content + SASRec, T = 1"
#   runs/i22h-hybrid-s{0,1,2}/eval/metrics_sft_cold-expansion_bucket-reward-sasrec+content-T1_all-routes.json
set -euo pipefail
P=${PREFIX:-i22h-hybrid}
for s in ${SEEDS:-0 1 2}; do
  for t in ${TEMPS:-0.5 1 2}; do
    rl-align eval runs/$P-s$s --split all --cold-expansion --cold-routes all --bucket-scorer reward:sasrec+content \
      --bucket-temperature "$t"
  done
  if [ -n "${REMAKE:-}" ]; then
    rl-align eval runs/$P-s$s --split all --cold-expansion --cold-routes all
    for t in 0.5 1; do
      rl-align eval runs/$P-s$s --split all --cold-expansion --cold-routes all --bucket-scorer reward:sasrec \
        --bucket-temperature "$t"
    done
  fi
done
