#!/usr/bin/env bash
# Issue 17 on issue 24's masked preset (experiments/configs/full_head.yaml): a reward that knows more than the policy
# because it was trained as the strongest in-repo item-ID model is, with the seen-item mask (baseline.seen_mask, which
# lifts SASRec-50 from 0.2135 to 0.2333 test HR@10), refitted on every training event. The policy served is the masked
# preset's SID beam (its item head off at evaluation: eval.item_head_betas [0], union 0), the list alignment moves.
#   SEEDS="0 1 2" experiments/i17_masked_runs.sh train   # copy runs/i24-seenmask-sN, exposure + DIN, the masked
#                                                         # SASRec reward, its ceilings over the beam on valid and test,
#                                                         # and SFT's beam evaluated the same way (the row to beat)
#   SEEDS="0 1 2" experiments/i17_masked_runs.sh rl [--set …]   # AdaGRPO (tag masked-adagrpo)
#   … rl --set rl.algo=mixture --set rl.lam=1.0 --set rl.tag=masked-mixture-lam1    # the controls
#   … rl --set rl.algo=nll --set rl.serving_prompts=0 --set rl.tag=masked-nll
#   … rl --set rl.serving_prompts=0 --set reward.fault_share=0.5 --set reward.fault_kind=negate \
#        --set rl.lam=3.0 --set rl.adagrpo.sanity_negatives=32 --set rl.tag=fault-negate-adagrpo-sanity-sp0-lam3
#                                  # a reward inverted for half the users, and the gate's sanity test (fiftieth session)
#   … rl --set rl.serving_prompts=0 --set reward.fault_share=0.5 --set reward.fault_kind=negate --set rl.lam=2.0 \
#        --set rl.adagrpo.difficulty=none --set rl.adagrpo.discriminability=none \
#        --set rl.adagrpo.sanity_negatives=32 --set rl.tag=fault-negate-sanityonly-sp0-lam2
#                                  # the sanity test as the whole gate (fifty-first session)
#   … rl --set rl.serving_prompts=0 --set rl.lam=3.5 --set rl.adagrpo.difficulty=none \
#        --set rl.adagrpo.discriminability=none --set rl.adagrpo.sanity_negatives=32 \
#        --set rl.adagrpo.sanity_draw=popularity --set rl.adagrpo.sanity_a=0.75 \
#        --set rl.tag=masked-sanitypop0.75-sp0-lam3.5
#   … rl <any of the above> --set rl.seed=101 --set rl.tag=<its tag>-rs101   # a second RL seed from the same SFT
#                                  # checkpoints; the table pools them with --rl-seeds=-rs101 (fifty-second session)
# Env: SEQ_LEN (the reward's history, default 20), BAG (ranker.sequence_seeds, default 1), TAG (runs/<TAG>-sN,
# default i17m), FROM (the runs copied, default runs/i24-seenmask; a run with exposure/ and the DIN ranker keeps them),
# MASK (baseline.seen_mask of the SASRec reward, default true; false = the control: the same reward without the mask,
#   e.g. TAG=i17u FROM=runs/i17m MASK=false … train, then … rl with MASK=false).
# Table: python experiments/i17_table.py runs/i17m-s{0,1,2} --sft-eval metrics_sft_item-head-u0-b0.json \
#          --tags masked-adagrpo masked-mixture-lam1 masked-nll [--rl-seeds=-rs101]
set -euo pipefail
what=$1; shift
tag=${TAG:-i17m}
from=${FROM:-runs/i24-seenmask}
cfg=experiments/configs/full_head.yaml
# paper.yaml's exposure log, ranker, reward-serving and RL settings, which full_head.yaml leaves at their defaults
side=(--set exposure.policy=mix --set exposure.slate_size=20 --set exposure.epsilon=0.05
      --set ranker.head=mlp --set ranker.epochs=6 --set reward.cpus_per_replica=0.5)
seq=(--set ranker.sequence_events=all --set ranker.sequence_max_len=${SEQ_LEN:-20}
     --set ranker.sequence_seeds=${BAG:-1} --set baseline.seen_mask=${MASK:-true})
beam=(--set 'eval.item_head_betas=[0]' --set eval.item_head_union=0)
for s in ${SEEDS:-0 1 2}; do
  run=runs/$tag-s$s
  if [ "$what" = train ]; then
    if [ ! -d "$run" ]; then
      cp -a "$from-s$s" "$run"
      rm -rf "$run/rl" "$run/ranker/scorers" "$run"/ranker/ceil* "$run"/ranker/eval_sasrec* \
        "$run"/ranker/report_sasrec*
    fi
    [ -d "$run/ranker/model" ] || rl-align run $cfg --set 'stages=[exposure,ranker]' --set seed=$s --run-dir "$run" \
      "${side[@]}" --set 'ranker.scorers=[din]'
    [ -d "$run/ranker/scorers/sasrec" ] || rl-align ranker scorers "$run" sasrec "${seq[@]}"
    for split in valid test; do rl-align ranker eval "$run" --split $split --scorer din sasrec > /dev/null; done
    [ -f "$run/eval/metrics_sft_item-head-u0-b0.json" ] || \
      rl-align eval "$run" --split both --item-head-betas 0 --item-head-union 0 > /dev/null
  else
    rl-align run $cfg --set 'stages=[rl]' --set seed=$s --run-dir "$run" "${side[@]}" "${seq[@]}" "${beam[@]}" \
      --set 'ranker.scorers=[din,sasrec]' --set 'reward.functions={ranker: 1.0}' --set reward.scorer=sasrec \
      --set rl.algo=adagrpo --set rl.lr=0.0001 --set rl.rollout_mode=beam --set rl.group_size=32 \
      --set rl.serving_prompts=0.75 --set rl.steps=150 --set rl.eval_every=10 --set rl.checkpoint_every=20 \
      --set rl.cpus_per_learner=1 --set rl.cpus_per_rollout_worker=0.5 --set rl.recent_prompts=3 \
      --set rl.prompts_per_step=128 --set rl.micro_batch_prompts=32 --set rl.tag=masked-adagrpo "$@"
  fi
done
