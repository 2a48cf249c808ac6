#!/usr/bin/env bash
# Issue 24: the item-ID token on SCI SIDs, then the same with its embeddings initialised from the run's own SASRec
# (sft.item_token_init: baseline:sasrec, the baselines stage before sft). Seeds interleaved, so each seed's pair is
# complete before the next starts. Rows: runs/i24-sci-itok-sN and runs/i24-sci-itok-sasinit-sN.
# Table: python experiments/compare_with_baselines.py runs/i24-sci-itok-sasinit-s{0,1,2} \
#          --other-policy "SCI SIDs + item_token" runs/i24-sci-itok-s{0,1,2} --label "SCI SIDs + item_token + SASRec init"
set -euo pipefail
for s in ${SEEDS:-0 1 2}; do
  TAG=sci-itok SEEDS=$s experiments/i24_sci_row.sh --set sid.collision=item_token
  TAG=sci-itok-sasinit SEEDS=$s experiments/i24_sci_row.sh --set sid.collision=item_token \
    --set 'stages=[data,embed,sids,baselines,sft,eval]' --set 'baseline.models=[sasrec]' \
    --set sft.item_token_init=baseline:sasrec
done
