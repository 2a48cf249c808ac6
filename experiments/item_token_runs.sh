#!/usr/bin/env bash
# Issue 24: the SID policy with an item-ID token after each semantic prefix (sid.collision: item_token) against
# the same preset with reassign, and SASRec with a 50-item history, 3 seeds each (full preset).
# Table: python experiments/compare_with_baselines.py runs/i24-itok-full-s{0,1,2} \
#          --baselines-from runs/fix-quick-s{0,1,2} --baselines-from runs/i24-sasrec50-s{0,1,2} \
#          --other-policy "SID policy, full, reassign" runs/fix-full-s{0,1,2} --label "SID policy, full, item_token"
set -euo pipefail
for s in 0 1 2; do
  rl-align baseline train experiments/configs/full.yaml --model sasrec --set baseline.max_len=50 --set seed=$s \
    --run-dir runs/i24-sasrec50-s$s
  rl-align run experiments/configs/full.yaml --set 'stages=[data,embed,sids,sft,eval]' \
    --set sid.collision=item_token --set seed=$s --run-dir runs/i24-itok-full-s$s
  rl-align run experiments/configs/full.yaml --set 'stages=[data,embed,sids,sft,eval]' \
    --set sid.collision=reassign --set seed=$s --run-dir runs/fix-full-s$s
done
