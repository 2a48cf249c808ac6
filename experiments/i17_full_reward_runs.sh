#!/usr/bin/env bash
# Issue 17: a sequence reward model refitted on every training event (`ranker.sequence_events: all`), and AdaGRPO with
# it from a converged SFT policy. The cut reward models of the twenty-fifth session learned from each user's training
# events without the last 2 + exposure.holdout_events, i.e. without the most recent transitions the policy learns from.
#   SEEDS="0 1 2" experiments/i17_full_reward_runs.sh train   # make the run (see POLICY), train the refitted SASRec
#                                                             # reward, its ceilings on valid and test
#   SEEDS="0 1 2" experiments/i17_full_reward_runs.sh rl [--set …]  # AdaGRPO with it (issue 17's best setting)
#   SEEDS="0 1 2" experiments/i17_full_reward_runs.sh rl --set rl.algo=mixture --set rl.tag=…   # controls
#   SEEDS="0 1 2" experiments/i17_full_reward_runs.sh rl --set rl.serving_split=test \
#     --set rl.steps_from=paper-sasrecall-adagrpo-ihead --set rl.tag=paper-sasrecall-adagrpo-ihead-refit
#       # the refit: the test ranking's own prompts, for the step count valid chose in the run above (report final)
# Env:
#   POLICY  the SFT policy aligned (default ihead):
#           ihead  the 64-wide SCI row with an item head (issue 24): a copy of runs/i24-w64-ihead-sN;
#           plain  the same row without the head: a copy of runs/i24-w64base-sN (its SASRec-50 comes along);
#           codes  issue 24's best row: the 64-wide SCI row with history items, the item head tied to them and
#                  history tokens that read their items' SID codes (policy.history_input: id_codes): a copy of
#                  runs/i24-w64-ihead-items-drop-hist-codes-sN (experiments/i24_item_head_items_runs.sh); the head
#                  file stays the SFT one (alignment moves the SID policy only);
#           codesbeam  the same row without the item head (it serves its SID beam, and SFT kept the checkpoint of
#                  the best valid beam): a copy of runs/i24-w64-ihead-items-drop-hist-codes-nohead-sN
#                  (SETTING=items-drop-hist-codes-nohead experiments/i24_item_head_items_runs.sh seeds);
#           full   the full preset's own policy (128 wide, text + collaborative SIDs): SFT of
#                  experiments/configs/paper.yaml in the run (about 9 min a seed).
#   REWARD_FROM  (train, optional) a run prefix (e.g. runs/i17-bag3) whose exposure log and trained ranker stage are
#           copied instead of trained again: allowed only when data/split.npz is byte-identical (they read nothing
#           else: the exposure policy and the reward models see the split, not the policy or its item vectors).
#   SEQ_LEN (the reward model's history length, default 20: on seed 0, 50 had the lower valid and test ceilings),
#   BAG (ranker.sequence_seeds, default 1), TAG (run dirs runs/<TAG>-sN, default i17-all).
# Table: python experiments/i17_table.py runs/i17-all-s{0,1,2} --tags paper-sasrecall-adagrpo-ihead …
set -euo pipefail
what=$1; shift
tag=${TAG:-i17-all}
policy=${POLICY:-ihead}
seq=(--set ranker.sequence_events=all --set ranker.sequence_max_len=${SEQ_LEN:-20}
     --set ranker.sequence_seeds=${BAG:-1})          # the refitted, bagged SASRec reward
reward=(--set 'ranker.scorers=[din,sasrec]' "${seq[@]}")
for s in ${SEEDS:-0 1 2}; do
  run=runs/$tag-s$s
  case "$policy" in
    ihead|plain) args=(--set embed.source=npy --set embed.npy_path=runs/sci-l1-s$s/retrieval/item_view.npy
                       --set embed.cf_dim=0 --set policy.hidden_size=64 --set policy.num_heads=1
                       --set policy.intermediate_size=256)
                 if [ "$policy" = ihead ]; then args+=(--set policy.item_head=free); src=runs/i24-w64-ihead-s$s
                 else args+=(--set policy.item_head=none); src=runs/i24-w64base-s$s; fi ;;
    codes|codesbeam)
      args=(--set embed.source=npy --set embed.npy_path=runs/sci-l1-s$s/retrieval/item_view.npy
            --set embed.cf_dim=0 --set policy.hidden_size=64 --set policy.num_heads=1
            --set policy.intermediate_size=256 --set sid.history=items --set policy.embedding_dropout=0.2
            --set policy.attention_dropout=0.2 --set policy.hidden_dropout=0.2 --set policy.tie_embeddings=false
            --set policy.history_input=id_codes)
      if [ "$policy" = codes ]; then args+=(--set policy.item_head=history); src=runs/i24-w64-ihead-items-drop-hist-codes-s$s
      else src=runs/i24-w64-ihead-items-drop-hist-codes-nohead-s$s; fi ;;
    full) args=() ;;
    *) echo "POLICY: expected ihead, plain, codes, codesbeam or full, got '$policy'" >&2; exit 2 ;;
  esac
  if [ "$what" = train ]; then
    if [ ! -d "$run" ]; then
      if [ "$policy" = full ]; then
        rl-align run experiments/configs/paper.yaml --set 'stages=[data,embed,sids,sft,eval]' --set seed=$s \
          --run-dir "$run"
      else
        cp -a "$src" "$run"
        rm -rf "$run/rl" "$run/ranker/scorers" "$run"/ranker/ceil* "$run"/ranker/eval* "$run"/ranker/report*
      fi
    fi
    if [ -n "${REWARD_FROM:-}" ]; then
      from=$REWARD_FROM-s$s
      cmp -s "$from/data/split.npz" "$run/data/split.npz" || { echo "$from: another split than $run" >&2; exit 2; }
      rm -rf "$run/exposure" "$run/ranker"
      cp -a "$from/exposure" "$from/ranker" "$run/"
      rm -f "$run"/ranker/ceil* "$run"/ranker/eval* "$run"/ranker/report*
    else
      [ -d "$run/exposure" ] || rl-align run experiments/configs/paper.yaml --set 'stages=[exposure,ranker]' \
        --set seed=$s --run-dir "$run" "${args[@]}" --set 'ranker.scorers=[din]'
      rl-align ranker scorers "$run" sasrec "${seq[@]}"
    fi
    for split in valid test; do rl-align ranker eval "$run" --split $split --scorer din sasrec > /dev/null; done
  else
    rl-align run experiments/configs/paper.yaml --set 'stages=[rl]' "${args[@]}" --set seed=$s --run-dir "$run" \
      "${reward[@]}" --set reward.scorer=sasrec \
      --set rl.algo=adagrpo --set rl.lr=0.0001 --set rl.rollout_mode=beam --set rl.group_size=32 \
      --set rl.serving_prompts=0.75 --set rl.steps=150 --set rl.tag=paper-sasrecall-adagrpo-$policy "$@"
  fi
done
