#!/usr/bin/env bash
# Issue 22: the bucket runs' own checkpoints re-evaluated with eval.bucket_cold_parents (items of buckets with no
# trained item take their parent prefix's mass, as the RQ cold expansion does). Needs the runs of
# `PREFIX=i22f CAP=0 experiments/sa2crq_bucket_runs.sh`; writes RUN/eval/metrics_sft_cold-expansion_bucket-parents.json.
# Table: python experiments/sa2crq_table.py --group "RQ-KMeans" runs/i22f-rqk-s{0,1,2} \
#   --group "SA²CRQ bucket" runs/i22f-bucket-s{0,1,2} \
#   --group "SA²CRQ bucket + parent route" runs/i22f-bucket-s{0,1,2}/eval/metrics_sft_cold-expansion_bucket-parents.json
set -euo pipefail
for s in ${SEEDS:-0 1 2}; do
  rl-align eval runs/${PREFIX:-i22f}-bucket-s$s --split all --cold-expansion --bucket-cold-parents
done
