#!/usr/bin/env bash
# Issue 22 on ML-100K: the cold expansion with every route to a new item teacher-forced (eval.cold_routes: all)
# against the beams' routes (the default), for RQ-KMeans 3×32 and the SA²CRQ bucket preset (hybrid head codes),
# seeds 0-2, cold-start protocol. Trains the runs that are missing (about 5 min each; their eval/metrics.json has the
# beams' routes), then re-evaluates every run with all routes (about 2 min each; writes
# eval/metrics_sft_cold-expansion_all-routes.json).
#   experiments/i22_cold_routes_runs.sh
# Table (beams' routes, then all routes):
#   python experiments/sa2crq_table.py --group "RQ-KMeans 3×32" runs/i22t-rqk-s{0,1,2} \
#     --group "SA²CRQ preset" runs/i22h-hybrid-s{0,1,2}
#   python experiments/sa2crq_table.py \
#     --group "RQ-KMeans 3×32" runs/i22t-rqk-s{0,1,2}/eval/metrics_sft_cold-expansion_all-routes.json \
#     --group "SA²CRQ preset" runs/i22h-hybrid-s{0,1,2}/eval/metrics_sft_cold-expansion_all-routes.json
# PRIOR=0.1 evaluates with α = 0.1 (eval.cold_prior) instead of the measured share (…_prior0.1_all-routes.json).
set -euo pipefail
COMMON=(--set 'stages=[data,embed,sids,sft,eval]' --set data.cold_share=0.1 --set embed.cf_fill_neighbours=10
        --set eval.cold_expansion=true)
for s in ${SEEDS:-0 1 2}; do
  [ -d runs/i22t-rqk-s$s/eval ] || rl-align run experiments/configs/quick.yaml "${COMMON[@]}" --set seed=$s \
    --run-dir runs/i22t-rqk-s$s
  [ -d runs/i22h-hybrid-s$s/eval ] || rl-align run experiments/configs/sa2crq_bucket.yaml --set seed=$s \
    --set eval.cold_routes=beams --run-dir runs/i22h-hybrid-s$s
  for r in runs/i22t-rqk-s$s runs/i22h-hybrid-s$s; do
    rl-align eval $r --split all --cold-expansion --cold-routes all ${PRIOR:+--cold-prior $PRIOR}
  done
done
