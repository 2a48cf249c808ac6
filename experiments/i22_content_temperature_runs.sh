#!/usr/bin/env bash
# Issue 22 on ML-100K: the content scorer's temperature T_c as a cold-side setting, chosen with the cold-valid part.
# No retraining: the content scorer is rebuilt from each bucket run's saved inputs at T_c (rl-align eval
# --bucket-scorer content --bucket-temperature T) and every split is evaluated with the cold expansion, all routes,
# the measured α and half the held-out items as cold-valid, as experiments/i22_cold_valid_runs.sh (cold_share 0.1,
# runs/i22h-hybrid-sN) and experiments/i22_cold_share_runs.sh (cold_share 0.3, runs/i22c03-hybrid-sN) did for the
# other candidates. The runs' own T_c = 0.1 is their saved scorer's file (metrics_sft_cold-expansion_all-routes_...).
#   experiments/i22_content_temperature_runs.sh              # both shares, seeds 0-2, about 1 min an evaluation
# Choice: python experiments/sa2crq_table.py --choose --group "RQ-KMeans 3×32" <the share's RQ-KMeans files> \
#     --group "content, T_c = 0.1" ... --group "content, T_c = 0.2" ... (one --group per candidate)
set -euo pipefail
E="--split all --cold-expansion --cold-routes all --cold-valid-share 0.5"
for P in ${PREFIXES:-i22h i22c03}; do
  for s in ${SEEDS:-0 1 2}; do
    for t in ${TEMPERATURES:-0.03 0.05 0.2 0.3}; do
      rl-align eval runs/$P-hybrid-s$s $E --bucket-scorer content --bucket-temperature "$t"
    done
  done
done
