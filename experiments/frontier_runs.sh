#!/usr/bin/env bash
# Issue 17, retrieval–validity frontier: from one SFT policy (a copy of a finished `make run` dir, rl/ left out),
# NLL, GRPO, NLL+λ·GRPO mixtures (λ 0.1 / 0.5 / 1.0) and AdaGRPO at three gate settings, 30 steps each (same seed,
# prompts, rollouts, reward), then `rl-align analyze frontier` (best-on-valid and final checkpoints).
# Validity axis: free sampling at T = 1 (eval.free_samples per user) — free beams hallucinate 0.00% here.
#   bash experiments/frontier_runs.sh [RUN=runs/i17-frontier-s0] [SOURCE=the newest make run dir]
set -euo pipefail
RUN=${1:-runs/i17-frontier-s0}
SRC=${2:-$(ls -td runs/ml100k-quick-*/ | head -1)}
CFG=experiments/configs/quick.yaml
STEPS=(--set rl.steps=30 --set rl.eval_every=10 --set rl.checkpoint_every=30)
test -d "$RUN" || .venv/bin/python -c "import shutil,sys; shutil.copytree(sys.argv[1], sys.argv[2], \
  ignore=shutil.ignore_patterns('rl', 'analysis', 'wandb', 'report'))" "$SRC" "$RUN"
test -f "$RUN/eval/metrics_sft.json" || .venv/bin/rl-align eval "$RUN" --split both --stage sft
.venv/bin/python experiments/rl_compare.py $CFG --run-dir "$RUN" "${STEPS[@]}"
for gate in "k_d=3" "a=0.8"; do
  tag="adagrpo-${gate/=/}"
  test -f "$RUN/rl/$tag/test_metrics.json" || .venv/bin/rl-align rl $CFG --run-dir "$RUN" "${STEPS[@]}" \
    --set rl.algo=adagrpo --set "rl.adagrpo.$gate" --set "rl.tag=$tag"
done
.venv/bin/rl-align analyze frontier "$RUN"
.venv/bin/rl-align analyze frontier "$RUN" --final
