#!/usr/bin/env bash
# Issue 17: alignment on serving prompts (rl.serving_prompts) from the converged full-preset SFT policy of
# experiments/i17_reward_models.sh (runs/i17-rw-sN), paper preset (reward = the ensemble only, 8 samples at T = 1).
# Per seed, lr 1e-4, 100 steps, half of each step's 128 prompts serving prompts:
#   - AdaGRPO and the fixed mixture λ = 1 on the valid ranking's serving prompts (choose on valid);
#   - the NLL anchor alone on training prompts (it cannot learn from a prompt without y*);
#   - with REFIT=1, the refit: AdaGRPO on the test ranking's serving prompts (the valid event as history), final
#     checkpoint.
#   SEEDS="0 1 2" [REFIT=1] experiments/i17_serving_runs.sh
# EXTRA="ALGO LR --set ..." adds one more setting per seed (e.g. another mixture λ).
# Table: python experiments/i17_table.py runs/i17-rw-s{0,1,2} --tags serving0.5-adagrpo-lr1e-4 ... nll-lr1e-4
set -euo pipefail
S="--set rl.serving_prompts=0.5"
for s in ${SEEDS:-0}; do
  until [ -f runs/i17-rw-s$s/ranker/ceilings_valid.md ]; do sleep 30; done   # the run's reward models are ready
  SEEDS=$s experiments/i17_reward_rl.sh \
    "adagrpo 0.0001 $S --set rl.tag=serving0.5-adagrpo-lr1e-4" \
    "nll 0.0001 --set rl.tag=nll-lr1e-4" \
    "mixture 0.0001 $S --set rl.lam=1 --set rl.tag=serving0.5-mixture-lam1-lr1e-4" \
    ${REFIT:+"adagrpo 0.0001 $S --set rl.serving_split=test --set rl.tag=serving0.5test-adagrpo-lr1e-4"} \
    ${EXTRA:+"$EXTRA"}
done
