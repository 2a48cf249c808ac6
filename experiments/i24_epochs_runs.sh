#!/usr/bin/env bash
# Issue 24, one change at a time: the SCI-SID full-preset policy (experiments/sci_sid_runs.sh, same towers
# runs/sci-l1-sN) trained for 30 SFT epochs instead of 20 (valid HR@10 still rose at epoch 20 on two seeds; the
# cosine schedule stretches with the epochs, and early stopping is off (patience 20 evaluations): with patience 4
# a first 40-epoch run stopped at epoch 14 while the learning rate was still near its peak (best epoch 6, test
# HR@10 0.1824); the best-on-valid checkpoint is still the one evaluated).
# Table: python experiments/compare_with_baselines.py runs/i24-sci-e30-s{0,1,2} --baselines-from runs/i24-sasrec50-s{0,1,2} \
#          --other-policy "SID policy, SCI SIDs, 20 epochs" runs/i20-scisid-full-s{0,1,2} --label "SID policy, SCI SIDs, 30 epochs"
set -euo pipefail
EPOCHS=${EPOCHS:-30}
for s in ${SEEDS:-0 1 2}; do
  test -f runs/sci-l1-s$s/retrieval/item_view.npy || \
    rl-align retrieval train experiments/configs/full.yaml --set seed=$s --set retrieval.swap_weight=1 --run-dir runs/sci-l1-s$s
  rl-align run experiments/configs/full.yaml --set 'stages=[data,embed,sids,sft,eval]' \
    --set embed.source=npy --set embed.npy_path=runs/sci-l1-s$s/retrieval/item_view.npy --set embed.cf_dim=0 \
    --set sft.epochs=$EPOCHS --set sft.patience=${PATIENCE:-20} --set seed=$s --run-dir runs/i24-sci-e$EPOCHS-s$s "$@"
done
