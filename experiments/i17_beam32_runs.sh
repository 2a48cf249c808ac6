#!/usr/bin/env bash
# Issue 17, sixteenth session: `tilted` on 32-beam rollout groups (the group size that holds most of the reward
# ceiling: experiments/i17_ceiling_by_group.py) with a uniform target over the tilted top 10 (rl.tilt_topk), three
# quarters of each step's 128 prompts the users' serving prompts, lr 1e-4, 150 steps, from the converged full-preset
# SFT policy of experiments/i17_reward_models.sh (runs/i17-rw-sN) and its ensemble reward.
#   SEEDS="0 1 2" [REFIT=1] experiments/i17_beam32_runs.sh
# ADAGRPO=1 runs AdaGRPO (the preset's gate) on the same groups instead of tilted (rl.tilt_topk does not apply).
# REFIT=1 adds the refit on the test ranking's serving prompts (rl.serving_split: test; report its final checkpoint).
# Table: python experiments/i17_table.py runs/i17-rw-s{0,1,2} --tags serving0.75-beam32-tilted-top10-lr1e-4 \
#          serving0.75test-beam32-tilted-top10-lr1e-4 serving0.5-adagrpo-lr1e-4
set -euo pipefail
B="--set rl.rollout_mode=beam --set rl.group_size=32 --set rl.serving_prompts=0.75 --set rl.steps=150 --set rl.tilt_topk=10"
if [ -n "${ADAGRPO:-}" ]; then
  A="--set rl.rollout_mode=beam --set rl.group_size=32 --set rl.serving_prompts=0.75 --set rl.steps=150"
  SEEDS="${SEEDS:-0}" experiments/i17_reward_rl.sh "adagrpo 0.0001 $A --set rl.tag=serving0.75-beam32-adagrpo-lr1e-4"
  exit 0
fi
for s in ${SEEDS:-0}; do
  SEEDS=$s experiments/i17_reward_rl.sh \
    "tilted 0.0001 $B --set rl.tag=serving0.75-beam32-tilted-top10-lr1e-4" \
    ${REFIT:+"tilted 0.0001 $B --set rl.serving_split=test --set rl.tag=serving0.75test-beam32-tilted-top10-lr1e-4"}
done
