#!/usr/bin/env bash
# Issue 22 on ML-100K: SA²CRQ bucket SIDs by the number of tail codewords learned per level in stage 2
# (sid.sa2crq.tail_codebook_size; 8 = K/4 was the preset until the thirty-second session), against RQ-KMeans 3×32,
# cold-start protocol and cold expansion on for both, content within-bucket scorer. About 4 min a run.
#   experiments/i22_tail_codebook_runs.sh              # runs/i22t-rqk-sS, runs/i22t-tcbN-sS for N in SIZES, S in SEEDS
# The choice rule (the nineteenth session's): among sizes whose mean valid HR@10 is ≥ 0.98× RQ-KMeans's, the highest
# mean valid tail HR@10, ties to the higher valid HR@10. The same grid as one sweep:
#   rl-align sweep experiments/configs/sa2crq_bucket.yaml --grid sid.sa2crq.tail_codebook_size=8,16,24,32 --grid seed=0,1,2
# Table: python experiments/sa2crq_table.py --group "RQ-KMeans 3×32" runs/i22t-rqk-s{0,1,2} \
#          --group "32 + 8" runs/i22t-tcb8-s{0,1,2} --group "32 + 16" runs/i22t-tcb16-s{0,1,2} …
# Head items stay on their stage-1 codes (sid.sa2crq.head_codes: head, the preset when these figures were made; the
# preset is hybrid since the thirty-fifth session): HEAD_CODES overrides.
set -euo pipefail
COMMON=(--set 'stages=[data,embed,sids,sft,eval]' --set data.cold_share=0.1 --set embed.cf_fill_neighbours=10
        --set eval.cold_expansion=true)
for s in ${SEEDS:-0 1 2}; do
  [ -d runs/i22t-rqk-s$s ] || rl-align run experiments/configs/quick.yaml "${COMMON[@]}" --set seed=$s \
    --run-dir runs/i22t-rqk-s$s
  for n in ${SIZES:-8 16 24 32}; do
    rl-align run experiments/configs/sa2crq_bucket.yaml --set seed=$s --set eval.cold_routes=beams --set sid.sa2crq.tail_codebook_size=$n \
      --set sid.sa2crq.head_codes=${HEAD_CODES:-head} \
      --run-dir runs/i22t-tcb$n-s$s
  done
done
