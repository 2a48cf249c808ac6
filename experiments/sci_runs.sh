#!/usr/bin/env bash
# SCI on ML-100K: the plain dual tower (λ = 0) and + symmetric alignment (λ = 1), seeds 0-2, full preset data.
# Each run: data → embed → retrieval (Ray Train) → exact / IVF-PQ / dual-view rows in runs/sci-l<λ>-s<seed>/retrieval/.
# Table: python experiments/sci_table.py runs/sci-l0-s{0,1,2} --vs runs/sci-l1-s{0,1,2}
set -euo pipefail
for s in 0 1 2; do
  for l in 0 1; do
    rl-align retrieval train experiments/configs/full.yaml --set seed=$s --set retrieval.swap_weight=$l \
      --set "retrieval.cpus_per_worker=${SCI_CPUS:-2}" --run-dir runs/sci-l$l-s$s "$@"
  done
done
