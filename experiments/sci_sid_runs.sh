#!/usr/bin/env bash
# Issue 20, "SIDs from SCI": the full-preset SID policy whose RQ-KMeans codes come from the SCI item tower's vectors
# (symmetric alignment, λ = 1; runs/sci-l1-sN from experiments/sci_runs.sh, trained on the training split only)
# instead of MiniLM text + the collaborative view. Same seeds, same split, same SFT and evaluator as runs/fix-full-sN.
# Table: python experiments/compare_with_baselines.py runs/i20-scisid-full-s{0,1,2} \
#          --other-policy "SID policy, text+cf SIDs" runs/fix-full-s{0,1,2} --label "SID policy, SCI SIDs"
set -euo pipefail
for s in 0 1 2; do
  test -f runs/sci-l1-s$s/retrieval/item_view.npy || \
    rl-align retrieval train experiments/configs/full.yaml --set seed=$s --set retrieval.swap_weight=1 --run-dir runs/sci-l1-s$s
  rl-align run experiments/configs/full.yaml --set 'stages=[data,embed,sids,sft,eval]' \
    --set embed.source=npy --set embed.npy_path=runs/sci-l1-s$s/retrieval/item_view.npy --set embed.cf_dim=0 \
    --set seed=$s --run-dir runs/i20-scisid-full-s$s "$@"
done
