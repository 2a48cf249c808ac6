#!/usr/bin/env bash
# Issue 17: a sequence reward model refitted on every training event (`ranker.sequence_events: all`), from the
# item-head SFT policies of issue 24 (runs/i24-w64-ihead-sN, experiments/i24_item_head_runs.sh).
# The cut reward models of the twenty-fifth session learned from each user's training events without the last
# 2 + exposure.holdout_events, i.e. without the most recent transitions the policy learns from.
#   SEEDS="0 1 2" experiments/i17_full_reward_runs.sh train   # copy the run (SFT, exposure, DIN kept), train the
#                                                             # refitted SASRec reward, its ceilings on valid and test
#   SEEDS="0 1 2" experiments/i17_full_reward_runs.sh rl [--set …]  # AdaGRPO with it (issue 17's best setting)
#   SEEDS="0 1 2" experiments/i17_full_reward_runs.sh rl --set rl.algo=mixture --set rl.tag=…   # controls
#   SEEDS="0 1 2" experiments/i17_full_reward_runs.sh rl --set rl.serving_split=test \
#     --set rl.steps_from=paper-sasrecall-adagrpo-ihead --set rl.tag=paper-sasrecall-adagrpo-ihead-refit
#       # the refit: the test ranking's own prompts, for the step count valid chose in the run above (report final)
# Env: SEQ_LEN (the reward model's history length, default 20: on seed 0, 50 had the lower valid and test ceilings),
# BAG (ranker.sequence_seeds, default 1), TAG (run dirs runs/<TAG>-sN, default i17-all).
# Table: python experiments/i17_table.py runs/i17-all-s{0,1,2} --tags paper-sasrecall-adagrpo-ihead …
set -euo pipefail
what=$1; shift
tag=${TAG:-i17-all}
for s in ${SEEDS:-0 1 2}; do
  run=runs/$tag-s$s
  if [ "$what" = train ]; then
    if [ ! -d "$run" ]; then
      cp -a runs/i24-w64-ihead-s$s "$run"
      rm -rf "$run/rl" "$run/ranker/scorers" "$run"/ranker/ceil* "$run"/ranker/eval* "$run"/ranker/report*
    fi
    rl-align ranker scorers "$run" sasrec --set ranker.sequence_events=all --set ranker.sequence_max_len=${SEQ_LEN:-20} \
      --set ranker.sequence_seeds=${BAG:-1}
    for split in valid test; do rl-align ranker eval "$run" --split $split --scorer din sasrec > /dev/null; done
  else
    rl-align run experiments/configs/paper.yaml --set 'stages=[rl]' \
      --set embed.source=npy --set embed.npy_path=runs/sci-l1-s$s/retrieval/item_view.npy --set embed.cf_dim=0 \
      --set policy.hidden_size=64 --set policy.num_heads=1 --set policy.intermediate_size=256 \
      --set policy.item_head=free --set seed=$s --run-dir "$run" \
      --set 'ranker.scorers=[din,sasrec]' --set ranker.sequence_events=all \
      --set ranker.sequence_max_len=${SEQ_LEN:-20} --set ranker.sequence_seeds=${BAG:-1} \
      --set reward.scorer=sasrec \
      --set rl.algo=adagrpo --set rl.lr=0.0001 --set rl.rollout_mode=beam --set rl.group_size=32 \
      --set rl.serving_prompts=0.75 --set rl.steps=150 --set rl.tag=paper-sasrecall-adagrpo-ihead "$@"
  fi
done
