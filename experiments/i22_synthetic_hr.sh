#!/usr/bin/env bash
# Issue 22 on the synthetic 100k-item catalog: HR@10 of SA²CRQ with bucket SIDs against RQ-KMeans 3×64, same
# policy and SFT budget (experiments/configs/synthetic_100k_sids.yaml), cold-start protocol (10% of the tail
# held out) and cold expansion on for both. ~15 min per tokenizer on 2 cores.
# Table: python experiments/sa2crq_table.py --group "RQ-KMeans 3×64" runs/i22-syn-rqk-s0 \
#          --group "SA²CRQ bucket" runs/i22-syn-bucket-s0
set -euo pipefail
CFG=experiments/configs/synthetic_100k_sids.yaml
COMMON=(--set eval.cold_expansion=true)
BUCKET=(--set sid.tokenizer=sa2crq --set sid.collision=bucket --set sid.bucket_scorer=content
        --set sid.sa2crq.tail_stop=start_level --set sid.sa2crq.head_codes=head)
for s in ${SEEDS:-0}; do
  rl-align run $CFG "${COMMON[@]}" --set seed=$s --run-dir runs/i22-syn-rqk-s$s "$@"
  rl-align run $CFG "${COMMON[@]}" "${BUCKET[@]}" --set seed=$s --run-dir runs/i22-syn-bucket-s$s "$@"
done
