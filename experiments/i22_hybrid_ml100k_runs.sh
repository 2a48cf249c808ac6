#!/usr/bin/env bash
# Issue 22 on ML-100K: SA²CRQ bucket SIDs with head items coded on the hybrid head + tail codebooks
# (sid.sa2crq.head_codes: hybrid, which gave 0.967x RQ-KMeans overall and 1.43x tail on the synthetic catalog but
# broke the length goal there) against stage-1 head codes (the preset until this run chose hybrid) and RQ-KMeans 3x32, cold-start protocol and cold
# expansion on for all three, seeds 0-2, about 4 min a run. Reuses runs/i22t-rqk-sN / runs/i22t-tcb24-sN when present
# (experiments/i22_tail_codebook_runs.sh; tcb24 is the preset).
#   experiments/i22_hybrid_ml100k_runs.sh
# Table: python experiments/sa2crq_table.py --group "RQ-KMeans 3×32" runs/i22t-rqk-s{0,1,2} \
#          --group "head codes" runs/i22t-tcb24-s{0,1,2} --group "hybrid codes" runs/i22h-hybrid-s{0,1,2}
set -euo pipefail
SIZES=24 experiments/i22_tail_codebook_runs.sh
for s in ${SEEDS:-0 1 2}; do
  rl-align run experiments/configs/sa2crq_bucket.yaml --set seed=$s --set eval.cold_routes=beams --set sid.sa2crq.head_codes=hybrid \
    --run-dir runs/i22h-hybrid-s$s "$@"
done
