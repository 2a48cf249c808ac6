#!/usr/bin/env bash
# Issue 24, SID design: SIDs quantised from an item-ID model's item table. SASRec-50's table (trained on training
# windows by the reference row's baselines stage, experiments/i24_user_tokens_runs.sh reference) alone, or joined
# half and half with the SCI item tower's vectors, on the 64-wide SCI row (experiments/i24_sci_row.sh).
#   experiments/i24_sid_vectors_runs.sh                     # both settings, seeds 0 1 2
#   SETTINGS=sci+sasrec50 SEEDS=0 experiments/i24_sid_vectors_runs.sh
# Table: python experiments/compare_with_baselines.py runs/i24-w64-vec-$SETTING-s{0,1,2} --baselines-from
#   runs/i24-w64base-s{0,1,2} --other-policy "SCI SIDs, 64-wide" runs/i24-w64base-s{0,1,2}
set -euo pipefail
W64=(--set policy.hidden_size=64 --set policy.num_heads=1 --set policy.intermediate_size=256)
for v in ${SETTINGS:-sasrec50 sci+sasrec50}; do
  for s in ${SEEDS:-0 1 2}; do
    out=runs/i24-sasvec/$v-s$s.npy
    case "$v" in
      sasrec50) join=() ;;
      sci+sasrec50) join=(--join runs/sci-l1-s$s/retrieval/item_view.npy) ;;
      *) echo "unknown setting $v" >&2; exit 2 ;;
    esac
    test -f "$out" || python experiments/item_table_vectors.py runs/i24-w64base-s$s/baselines/sasrec "$out" "${join[@]}"
    TAG=w64-vec-$v SEEDS=$s experiments/i24_sci_row.sh "${W64[@]}" --set embed.npy_path="$out" "$@"
  done
done
