#!/usr/bin/env bash
# Issue 22 on ML-100K: SA²CRQ with bucket SIDs (experiments/configs/sa2crq_bucket.yaml) against RQ-KMeans 3×32
# (the quick preset), both with the cold-start protocol (10% of the tail held out) and cold expansion on, same
# policy and SFT budget, seeds 0-2. Two bucket variants: no cap (codes head-long / tail-short) and sid.bucket_cap=10
# (it lengthens the tail items of big buckets by one token). Held-out items get the collaborative vector of their 10
# nearest items by text (embed.cf_fill_neighbours; the sa2crq_bucket preset sets it too).
# Ninth session's runs: PREFIX=i22f CAP=0 experiments/sa2crq_bucket_runs.sh; table:
#   python experiments/sa2crq_table.py --group "RQ-KMeans 3×32" runs/i22f-rqk-s{0,1,2} \
#          --group "SA²CRQ bucket" runs/i22f-bucket-s{0,1,2}
set -euo pipefail
# the figures this script recorded were made with 8 tail codewords per level, the preset then (now 24): TAIL_CODES
# overrides
# and with head items on their stage-1 codes (the preset until the thirty-fifth session; now hybrid): HEAD_CODES
# overrides
TAIL=(--set sid.sa2crq.tail_codebook_size=${TAIL_CODES:-8} --set sid.sa2crq.head_codes=${HEAD_CODES:-head})
COMMON=(--set 'stages=[data,embed,sids,sft,eval]' --set data.cold_share=0.1 --set embed.cf_fill_neighbours=10
        --set eval.cold_expansion=true)
# PREFIX names the run dirs (i22f: after held-out items got collaborative vectors from their text neighbours);
# CAP=0 skips the capped variant.
P=${PREFIX:-i22}
for s in ${SEEDS:-0 1 2}; do
  rl-align run experiments/configs/quick.yaml "${COMMON[@]}" --set seed=$s --run-dir runs/$P-rqk-s$s
  rl-align run experiments/configs/sa2crq_bucket.yaml --set seed=$s --set eval.cold_routes=beams "${TAIL[@]}" --run-dir runs/$P-bucket-s$s "$@"
  if [ "${CAP:-1}" = 1 ]; then
    rl-align run experiments/configs/sa2crq_bucket.yaml --set seed=$s --set eval.cold_routes=beams "${TAIL[@]}" --set sid.bucket_cap=10 \
      --run-dir runs/$P-bucket-cap10-s$s "$@"
  fi
done
