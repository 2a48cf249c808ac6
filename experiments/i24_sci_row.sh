#!/usr/bin/env bash
# Issue 24, one change at a time on the best row so far (the full preset with SCI item-tower SIDs, 20 SFT epochs,
# experiments/sci_sid_runs.sh): every extra argument is passed to `rl-align run` as the change under test.
#   TAG=embdrop0.2 experiments/i24_sci_row.sh --set policy.embedding_dropout=0.2
# Runs land in runs/i24-$TAG-s{0,1,2}; the SCI towers (runs/sci-l1-sN) are trained once per seed and reused.
# Table: python experiments/compare_with_baselines.py runs/i24-$TAG-s{0,1,2} --label "SID policy, SCI SIDs, $TAG"
set -euo pipefail
: "${TAG:?set TAG to name the row}"
for s in ${SEEDS:-0 1 2}; do
  test -f runs/sci-l1-s$s/retrieval/item_view.npy || \
    rl-align retrieval train experiments/configs/full.yaml --set seed=$s --set retrieval.swap_weight=1 --run-dir runs/sci-l1-s$s
  rl-align run experiments/configs/full.yaml --set 'stages=[data,embed,sids,sft,eval]' \
    --set embed.source=npy --set embed.npy_path=runs/sci-l1-s$s/retrieval/item_view.npy --set embed.cf_dim=0 \
    --set seed=$s --run-dir runs/i24-$TAG-s$s "$@"
done
