#!/usr/bin/env bash
# Issue 22: SA²CRQ bucket SIDs with the stop rule's prefix masses recounted where hybrid head codes put the head
# (sid.sa2crq.priors: hybrid). With stage-1 priors a head item pulled onto a tail codeword lands under a prefix of
# mass 0 and stops at N = 2, which is why hybrid head codes broke the length goal on the synthetic catalog
# (head 2.32 / tail 2.00). Cold-start protocol and cold expansion on, as for every tokenizer compared.
#   experiments/i22_hybrid_priors_runs.sh ml100k      # seeds 0-2, ~5 min a run -> runs/i22hp-sN
#   experiments/i22_hybrid_priors_runs.sh synthetic   # SEEDS (default 0), 10-12 min a run -> runs/i22-syn-hp-sN
#   SUFFIX=-tau0.0002 experiments/i22_hybrid_priors_runs.sh synthetic --set sid.sa2crq.tau=0.0002   # -> runs/i22-syn-hp-tau0.0002-sN
# References on the same machine: ML-100K runs/i22t-rqk-sN (RQ-KMeans 3x32) and runs/i22h-hybrid-sN (the preset,
# experiments/i22_hybrid_ml100k_runs.sh); synthetic runs/i22-syn-rqk-sN and runs/i22-syn-bucket-hybrid-sN
# (HEAD_CODES=hybrid experiments/i22_synthetic_hr.sh).
# Choice rule, fixed before the runs (the nineteenth session's): among the settings whose mean valid HR@10 is
# >= 0.98x RQ-KMeans's, the higher mean valid tail HR@10, ties to the higher valid HR@10.
# Tables: python experiments/sa2crq_table.py --group "RQ-KMeans 3×32" runs/i22t-rqk-s{0,1,2} \
#   --group "hybrid codes" runs/i22h-hybrid-s{0,1,2} --group "+ hybrid priors" runs/i22hp-s{0,1,2}
# and with runs/i22-syn-rqk-sN, runs/i22-syn-bucket-hybrid-sN, runs/i22-syn-hp-sN for the synthetic catalog.
set -euo pipefail
case "${1:-}" in
  ml100k)
    shift
    for s in ${SEEDS:-0 1 2}; do
      rl-align run experiments/configs/sa2crq_bucket.yaml --set seed=$s --set eval.cold_routes=beams --set sid.sa2crq.head_codes=hybrid \
        --set sid.sa2crq.priors=hybrid --run-dir runs/i22hp${SUFFIX:-}-s$s "$@"
    done ;;
  synthetic)
    shift
    for s in ${SEEDS:-0}; do
      rl-align run experiments/configs/synthetic_100k_sids.yaml --set eval.cold_expansion=true \
        --set sid.tokenizer=sa2crq --set sid.collision=bucket --set sid.bucket_scorer=content \
        --set sid.sa2crq.tail_stop=start_level --set sid.sa2crq.head_codes=hybrid --set sid.sa2crq.priors=hybrid \
        --set seed=$s --run-dir runs/i22-syn-hp${SUFFIX:-}-s$s "$@"
    done ;;
  *) echo "usage: $0 ml100k|synthetic [--set key=value ...]" >&2; exit 2 ;;
esac
