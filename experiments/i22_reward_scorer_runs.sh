#!/usr/bin/env bash
# Issue 22 on ML-100K: a trained reward model (SASRec, training events only) as the within-bucket scorer of SA²CRQ
# bucket SIDs, against RQ-KMeans 3×32, both with the cold-start protocol and cold expansion on (the setup of
# experiments/sa2crq_bucket_runs.sh). The reward model orders the items with training interactions; items without
# any keep the catalog's content scorer (Buckets.attach). The temperature is chosen on valid by
# experiments/bucket_scorer_choice.py (one beam search per split, cold expansion off), then every split is evaluated
# with cold expansion:
#   experiments/i22_reward_scorer_runs.sh train            # per seed: RQ-KMeans run, bucket run + exposure + ranker + SASRec scorer
#   experiments/i22_reward_scorer_runs.sh choose           # per seed: valid/test table of every scorer and temperature
#   T=1 experiments/i22_reward_scorer_runs.sh eval         # per seed: all splits, cold expansion, reward:sasrec at T
# Table: python experiments/sa2crq_table.py --group "RQ-KMeans" runs/i22f-rqk-s{0,1,2} --group "SA²CRQ bucket"
#   runs/i22f-bucket-s{0,1,2} --group "SA²CRQ bucket, SASRec scorer"
#   runs/i22f-bucket-s{0,1,2}/eval/metrics_sft_cold-expansion_bucket-reward-sasrec-T$T.json
set -euo pipefail
# the figures this script recorded were made with 8 tail codewords per level, the preset then (now 24): TAIL_CODES
# overrides
# and with head items on their stage-1 codes (the preset until the thirty-fifth session; now hybrid): HEAD_CODES
# overrides
TAIL=(--set sid.sa2crq.tail_codebook_size=${TAIL_CODES:-8} --set sid.sa2crq.head_codes=${HEAD_CODES:-head})
COMMON=(--set 'stages=[data,embed,sids,sft,eval]' --set data.cold_share=0.1 --set embed.cf_fill_neighbours=10
        --set eval.cold_expansion=true)
P=${PREFIX:-i22f}
what=${1:?train | choose | eval}; shift
for s in ${SEEDS:-0 1 2}; do
  case "$what" in
    train)
      rl-align run experiments/configs/quick.yaml "${COMMON[@]}" --set seed=$s --run-dir runs/$P-rqk-s$s
      rl-align run experiments/configs/sa2crq_bucket.yaml --set seed=$s --set eval.cold_routes=beams "${TAIL[@]}" \
        --set 'stages=[data,embed,sids,sft,eval,exposure,ranker]' --set 'ranker.scorers=[din,sasrec]' \
        --run-dir runs/$P-bucket-s$s "$@" ;;
    choose)
      python experiments/bucket_scorer_choice.py runs/$P-bucket-s$s --temperatures 0.1 --reward-models sasrec \
        --reward-temperatures ${TEMPS:-0.1 0.3 0.5 1 3} | tee runs/$P-bucket-s$s/eval/scorer_choice.md ;;
    eval)
      : "${T:?set T to the temperature valid chose}"
      rl-align eval runs/$P-bucket-s$s --split all --cold-expansion --bucket-scorer reward:sasrec \
        --bucket-temperature "$T" ;;
    *) echo "unknown step $what" >&2; exit 2 ;;
  esac
done
