#!/usr/bin/env bash
# Issues 24 and 17: AdaGRPO from the item-head SFT policies (runs/i24-w64-ihead-sN of experiments/i24_item_head_runs.sh).
# The SID policy is aligned; its SFT item head rides along frozen, and validation / test rank the fused list (the
# beam ∪ the head's top items by log π + β · log softmax_head, β re-chosen on valid).
# Per seed, one `rl-align run` of the paper preset with the run's own policy settings: the exposure and ranker
# stages with issue 17's reward models (DIN, SASRec, GRU4Rec, their calibrated ensemble; ceilings in
# ranker/ceilings_test.md), then issue 17's best AdaGRPO setting (the ensemble reward, 32 beams, 75% serving
# prompts, lr 1e-4, 150 steps), tag rl/paper-ensemble-adagrpo-ihead.
# The reward models' ceilings on valid follow (ranker/eval*_valid.json, which the table reads).
#   SEEDS="0 1 2" experiments/i24_item_head_rl.sh
#   SEEDS="0 1 2" experiments/i24_item_head_rl.sh --set rl.algo=nll --set rl.serving_prompts=0 \
#     --set rl.tag=paper-ensemble-nll-ihead                 # the NLL-anchor control
# Table: python experiments/i17_table.py runs/i24-w64-ihead-s{0,1,2} --tags paper-ensemble-adagrpo-ihead \
#   paper-ensemble-nll-ihead
set -euo pipefail
for s in ${SEEDS:-0 1 2}; do
  rl-align run experiments/configs/paper.yaml --set 'stages=[exposure,ranker,rl]' \
    --set embed.source=npy --set embed.npy_path=runs/sci-l1-s$s/retrieval/item_view.npy --set embed.cf_dim=0 \
    --set policy.hidden_size=64 --set policy.num_heads=1 --set policy.intermediate_size=256 \
    --set policy.item_head=free --set seed=$s --run-dir runs/${TAG:-i24-w64-ihead}-s$s \
    --set rl.algo=adagrpo --set rl.lr=0.0001 --set rl.rollout_mode=beam --set rl.group_size=32 \
    --set rl.serving_prompts=0.75 --set rl.steps=150 --set rl.tag=paper-ensemble-adagrpo-ihead "$@"
  test -f runs/${TAG:-i24-w64-ihead}-s$s/ranker/eval_valid.json || \
    rl-align ranker eval runs/${TAG:-i24-w64-ihead}-s$s --split valid --scorer din sasrec gru4rec ensemble
done
