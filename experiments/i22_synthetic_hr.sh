#!/usr/bin/env bash
# Issue 22 on the synthetic 100k-item catalog: HR@10 of SA²CRQ with bucket SIDs against RQ-KMeans 3×64, same
# policy and SFT budget (experiments/configs/synthetic_100k_sids.yaml), cold-start protocol (10% of the tail
# held out) and cold expansion on for both. ~15 min per tokenizer on 2 cores.
# Table: python experiments/sa2crq_table.py --group "RQ-KMeans 3×64" runs/i22-syn-rqk-s0 \
#          --group "SA²CRQ bucket" runs/i22-syn-bucket-s0
# HEAD_CODES=hybrid (sid.sa2crq.head_codes; default head) writes runs/i22-syn-bucket-hybrid-sN; SKIP_RQK=1 runs the
# bucket tokenizer only (its RQ-KMeans run already there). The catalog is the same at every seed
# (data.synthetic.seed stays 0): the seed moves the tokenizer's k-means and the policy.
set -euo pipefail
CFG=experiments/configs/synthetic_100k_sids.yaml
COMMON=(--set eval.cold_expansion=true)
HEAD_CODES=${HEAD_CODES:-head}
SUFFIX=$([ "$HEAD_CODES" = head ] && echo "" || echo "-$HEAD_CODES")
BUCKET=(--set sid.tokenizer=sa2crq --set sid.collision=bucket --set sid.bucket_scorer=content
        --set sid.sa2crq.tail_stop=start_level --set sid.sa2crq.head_codes=$HEAD_CODES)
for s in ${SEEDS:-0}; do
  [ "${SKIP_RQK:-0}" = 1 ] || rl-align run $CFG "${COMMON[@]}" --set seed=$s --run-dir runs/i22-syn-rqk-s$s "$@"
  rl-align run $CFG "${COMMON[@]}" "${BUCKET[@]}" --set seed=$s --run-dir runs/i22-syn-bucket$SUFFIX-s$s "$@"
done
