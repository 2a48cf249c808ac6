#!/usr/bin/env bash
# Issue 17: alignment from the converged full-preset SFT policy of experiments/i17_reward_models.sh (runs/i17-rw-sN)
# with the paper preset (reward = the chosen reward model only, 8 sampled rollouts at T = 1), one run per setting.
#   SCORER=ensemble SEEDS="0" experiments/i17_reward_rl.sh "adagrpo 0.00003" "adagrpo 0.0001" "grpo 0.0001"
# Each argument: "ALGO LR [extra --set KEY=VALUE ...]"; tags rl/paper-$SCORER-$ALGO-lr$LR.
set -euo pipefail
SCORER=${SCORER:-ensemble}
for s in ${SEEDS:-0}; do
  for setting in "$@"; do
    read -r algo lr extra <<< "$setting"
    rl-align rl experiments/configs/paper.yaml --run-dir runs/i17-rw-s$s --set seed=$s \
      --set 'ranker.scorers=[din,sasrec,gru4rec,ensemble]' --set 'ranker.ensemble_members=[din,sasrec,gru4rec]' \
      --set reward.scorer=$SCORER --set rl.algo=$algo --set rl.lr=$lr --set rl.tag=paper-$SCORER-$algo-lr$lr $extra
  done
done
