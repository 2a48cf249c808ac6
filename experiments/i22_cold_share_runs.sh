#!/usr/bin/env bash
# Issue 22 on ML-100K with more held-out items: the cold-start protocol at data.cold_share = SHARE (default 0.3,
# about three times the 0.1 of the other issue-22 runs), so the cold figure rests on more items. Per seed: RQ-KMeans
# 3×32 (quick preset) and the SA²CRQ bucket preset, each trained with that share, the bucket run with the exposure
# and ranker stages and a SASRec reward model on training events (as experiments/i22_reward_scorer_runs.sh); then every split with the cold expansion, all routes, the
# measured α and a cold-valid part (half the held-out items), for RQ-KMeans and three within-bucket scorers.
#   experiments/i22_cold_share_runs.sh                       # seeds 0-2 (SEEDS, SHARE override); ~22 min a seed
# Table and choice: python experiments/sa2crq_table.py --choose --group "RQ-KMeans 3×32" \
#     runs/i22c03-rqk-s{0,1,2}/eval/metrics_sft_cold-expansion_all-routes_cold-valid0.5.json --group ...
# Item-level cold test: python experiments/i22_cold_item_hits.py --group ... (the same files)
set -euo pipefail
SHARE=${SHARE:-0.3}
P=i22c${SHARE/./}
E="--split all --cold-expansion --cold-routes all --cold-valid-share 0.5"
for s in ${SEEDS:-0 1 2}; do
  [ -d runs/$P-rqk-s$s/eval ] || rl-align run experiments/configs/quick.yaml --set 'stages=[data,embed,sids,sft,eval]' \
    --set data.cold_share=$SHARE --set embed.cf_fill_neighbours=10 --set eval.cold_expansion=true --set seed=$s \
    --run-dir runs/$P-rqk-s$s
  [ -d runs/$P-hybrid-s$s/ranker/scorers/sasrec ] || rl-align run experiments/configs/sa2crq_bucket.yaml \
    --set 'stages=[data,embed,sids,sft,eval,exposure,ranker]' --set 'ranker.scorers=[din,sasrec]' \
    --set data.cold_share=$SHARE --set seed=$s --run-dir runs/$P-hybrid-s$s
  rl-align eval runs/$P-rqk-s$s $E
  rl-align eval runs/$P-hybrid-s$s $E
  for t in 1 2; do
    rl-align eval runs/$P-hybrid-s$s $E --bucket-scorer reward:sasrec+content --bucket-temperature "$t"
  done
done
