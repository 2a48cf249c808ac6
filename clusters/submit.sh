#!/usr/bin/env bash
# Submit an rl-align stage to a running Ray cluster (ray job submit). Usage:
#   clusters/submit.sh [CONFIG] [RUN_DIR] [extra rl-align args...]
# RAY_ADDRESS defaults to the loopback dashboard (e.g. `ray dashboard clusters/cluster.yaml` forwards it there).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-clusters/rl_gpu.yaml}"
RUN_DIR="${2:-/shared/runs/ml100k-gpu-rl}"
shift $(( $# > 2 ? 2 : $# ))
export RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
python -m rl_align config "$CONFIG" > /dev/null   # fail here, not on the cluster, on a bad config
exec ray job submit --address "$RAY_ADDRESS" --runtime-env clusters/runtime_env.yaml \
    -- python -m rl_align run "$CONFIG" --run-dir "$RUN_DIR" "$@"
