#!/usr/bin/env bash
# Issue 22 on ML-100K: SA²CRQ with bucket SIDs (experiments/configs/sa2crq_bucket.yaml) against RQ-KMeans 3×32
# (the quick preset), both with the cold-start protocol (10% of the tail held out) and cold expansion on, same
# policy and SFT budget, seeds 0-2. Valid chooses between bucket variants on seed 0 (VARIANTS), test reports.
# Table: python experiments/sa2crq_table.py --group "RQ-KMeans 3×32" runs/i22-rqk-s{0,1,2} \
#          --group "SA²CRQ bucket" runs/i22-bucket-s{0,1,2}
set -euo pipefail
COMMON=(--set 'stages=[data,embed,sids,sft,eval]' --set data.cold_share=0.1 --set eval.cold_expansion=true)
for s in ${SEEDS:-0 1 2}; do
  rl-align run experiments/configs/quick.yaml "${COMMON[@]}" --set seed=$s --run-dir runs/i22-rqk-s$s
  rl-align run experiments/configs/sa2crq_bucket.yaml --set seed=$s --run-dir runs/i22-bucket-s$s "$@"
done
