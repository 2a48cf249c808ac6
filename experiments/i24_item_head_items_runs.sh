#!/usr/bin/env bash
# Issue 24: the item head on SASRec's input (policy.item_head: free with sid.history: items). With history items the
# packed batch's shared columns are a causal transformer over one token per item, SASRec's own layout, and the head
# reads them as SASRec's output layer does; the SID tokens are still generated under the trie beside it.
#   experiments/i24_item_head_items_runs.sh screen           # seed 0: items; items + SASRec's dropout set (0.2)
#   SCREEN="items-drop-untied items-drop-hist" experiments/i24_item_head_items_runs.sh screen
#                                         # + the output head untied; + the head tied to the history tokens
#   SCREEN="items-drop-hist-init items-drop-hist-w1 items-drop-hist-w128 items-drop3-hist items-drop-hist-l3
#     items-drop-hist-ema" experiments/i24_item_head_items_runs.sh screen
#                                         # the tied head started from SASRec's table; its loss weight 1; 128 wide;
#                                         # dropout 0.3; three layers; a weight EMA
#   SETTING=items-drop-hist-codes SEEDS="0 1 2 3 4" experiments/i24_item_head_items_runs.sh extra
#                                         # + each history token reads its item's SID codes (policy.history_input)
#   SCREEN="items-drop-hist-codes-vec items-drop-hist-vec" experiments/i24_item_head_items_runs.sh screen
#   SETTING=items-drop-hist-codes-vec experiments/i24_item_head_items_runs.sh seeds
#                                         # + (or instead of the codes) a projection of the item's own vector
#   SCREEN=items-drop-hist-codes-own experiments/i24_item_head_items_runs.sh screen   # the codes through an own table
#   SCREEN="items-drop-hist-codes-glevel items-drop-hist-codes-gpop" experiments/i24_item_head_items_runs.sh screen
#                                         # the code gate per level, or per popularity quintile
#   SCREEN="items-drop-hist-codes-b32 items-drop-hist-codes-ema items-drop-hist-codes-idrop" … screen
#                                         # id_codes with half the batch; a weight EMA; item deletion
#   SCREEN="items-drop-hist-codes-ut items-drop-hist-codes-wd" … screen   # + user tokens; weight decay 0.1
#   SCREEN="items-drop-hist-codes-lr1e3-e40 items-drop-hist-codes-st10" … screen   # SASRec's lr for 40 epochs; stride
#   SCREEN="items-drop-hist-codes-k16 items-drop-hist-codes-l4k16" … screen   # 3 × 16 or 4 × 16 codebooks
#   SETTING=items-drop-hist-codes-nohead SEEDS="0 1 2" … seeds   # no item head: the beam is served (issue 17)
#   SETTING=items-drop-hist experiments/i24_item_head_items_runs.sh extra   # seeds 3 4, each with its own SASRec-50
#     table: … compare_with_baselines.py runs/i24-w64-ihead-items-drop-hist-s{0,1,2,3,4} --baselines-from
#     runs/i24-w64-ihead-s{0,1,2} runs/i24-w64-ihead-items-drop-hist-s{3,4}
#   SETTING=items experiments/i24_item_head_items_runs.sh seeds   # seeds 1 2 of the valid pick
# Reference: runs/i24-w64-ihead-sN (the item-head row on code prompts, with its own SASRec-50; about 7 min a run).
# Table: python experiments/compare_with_baselines.py runs/i24-w64-ihead-$SETTING-s{0,1,2} --baselines-from
#   runs/i24-w64-ihead-s{0,1,2} --other-policy "item head" runs/i24-w64-ihead-s{0,1,2}
set -euo pipefail
DROP="--set policy.embedding_dropout=0.2 --set policy.attention_dropout=0.2 --set policy.hidden_dropout=0.2"
args_for() {  # setting name -> its --set flags
  case "$1" in
    items) echo "--set sid.history=items" ;;
    items-drop) echo "--set sid.history=items $DROP" ;;
    # the output head untied from the input embeddings: a tied head's softmax pushes every history token's row (its
    # input embedding too) away from the states, since history tokens are in the vocabulary but never a target
    items-drop-untied) echo "--set sid.history=items $DROP --set policy.tie_embeddings=false" ;;
    # SASRec's one item table: the head's item vectors are the history tokens' input embeddings (untied output head,
    # else its softmax pushes those rows away from the states the head pulls them toward)
    items-drop-hist) echo "--set sid.history=items $DROP --set policy.tie_embeddings=false --set policy.item_head=history" ;;
    # the same trained twice as long (its valid HR@10 was still rising at epoch 20; SASRec's best epochs are 64-84)
    items-drop-hist-e40) echo "$(args_for items-drop-hist) --set sft.epochs=40 --set sft.patience=20" ;;
    # the 50-item history SASRec does best with; the tied head with a tied output head (the control of the untie)
    items-drop-hist-h50) echo "$(args_for items-drop-hist) --set data.max_history=50" ;;
    items-drop-hist-tiedlm) echo "--set sid.history=items $DROP --set policy.item_head=history" ;;
    # the tied head's item table started from the reference run's converged SASRec-50 (training split only; mapped
    # by an isometry to the policy width and rescaled, so items' dot products keep SASRec's geometry; the projection
    # and the transformer still start at random)
    items-drop-hist-init) echo "$(args_for items-drop-hist) --set sft.item_token_init=runs/i24-w64-ihead-s$S/baselines/sasrec" ;;
    # the head's loss weighted as much as the SID tokens' (0.5 before): the head is what ranks
    items-drop-hist-w1) echo "$(args_for items-drop-hist) --set sft.item_head_weight=1.0" ;;
    # the 128-wide policy of the full preset (2 heads of 64) with the tied head
    items-drop-hist-w128) echo "$(args_for items-drop-hist) --set policy.hidden_size=128 --set policy.num_heads=2 --set policy.intermediate_size=512" ;;
    # more dropout (0.3 everywhere): the joint model has two losses and a wider vocabulary than SASRec to overfit
    items-drop3-hist) echo "--set sid.history=items ${DROP//0.2/0.3} --set policy.tie_embeddings=false --set policy.item_head=history" ;;
    # a third layer (SASRec-50 has two; the joint model carries the SID tokens' task as well)
    items-drop-hist-l3) echo "$(args_for items-drop-hist) --set policy.num_layers=3" ;;
    # validate and keep a weight average (about the last 200 steps): the tied head's valid moves ±0.01 between epochs
    items-drop-hist-ema) echo "$(args_for items-drop-hist) --set sft.ema_decay=0.995" ;;
    # each history token reads its item's SID code rows (through a learned gate from 0) beside its ID row (content
    # shared by items with common codes: the rarely seen items' rows are no longer only their own), and the tied head
    # scores those composed rows. Seed 0 of the ungated sum (commit 4c221a8) is runs/i24-…-codes-ungated-s0
    items-drop-hist-codes) echo "$(args_for items-drop-hist) --set policy.history_input=id_codes" ;;
    # the row reads its item's own vector (the SCI item view its SIDs quantise) through a projection from 0, instead
    # of (vec) or beside (codes-vec) its code rows: content at full resolution rather than through three codes
    items-drop-hist-vec) echo "$(args_for items-drop-hist) --set policy.history_input=id_vec" ;;
    items-drop-hist-codes-vec) echo "$(args_for items-drop-hist) --set policy.history_input=id_codes_vec" ;;
    # the codes read through a table of their own (zero at the start, no gate), not the rows the SID tokens use
    items-drop-hist-codes-own) echo "$(args_for items-drop-hist) --set policy.history_input=id_codes_own" ;;
    # the code gate per code level (coarse and fine codes weighted apart), or per popularity quintile of the item
    # (rare items, whose ID rows are nearly random, may take more content than frequent ones)
    items-drop-hist-codes-glevel) echo "$(args_for items-drop-hist-codes) --set policy.history_gate=level" ;;
    items-drop-hist-codes-gpop) echo "$(args_for items-drop-hist-codes) --set policy.history_gate=popularity" ;;
    # knobs already in the framework, on the id_codes row: a weight EMA (the closest miss on the tied head), item
    # deletion in the training windows, and half the batch (a batch of 128 had lowered test on the code-prompt row)
    items-drop-hist-codes-ema) echo "$(args_for items-drop-hist-codes) --set sft.ema_decay=0.995" ;;
    items-drop-hist-codes-idrop) echo "$(args_for items-drop-hist-codes) --set sft.item_drop=0.1" ;;
    items-drop-hist-codes-b32) echo "$(args_for items-drop-hist-codes) --set sft.batch_size=32" ;;
    # the user's side features as prompt tokens before the history (a signal SASRec does not have; on the code-prompt
    # row they raised test but not valid), and a weight decay ten times the preset's (the joint model overfits from
    # epoch 16 where SASRec trains for 60+)
    items-drop-hist-codes-ut) echo "$(args_for items-drop-hist-codes) --set sid.user_tokens=[gender,age,occupation]" ;;
    items-drop-hist-codes-wd) echo "$(args_for items-drop-hist-codes) --set sft.weight_decay=0.1" ;;
    # SASRec's schedule on id_codes: its learning rate (1e-3, not 3e-3) for twice the epochs (SASRec-50's best epochs
    # are 44-84; at 3e-3 the joint model peaks by epoch 12-20 and 40 epochs overfit), and overlapping windows (each
    # target sees at least 10 items of history, as the 20-item serving prompt does; the old code-prompt row's stride 5
    # raised valid but not test)
    items-drop-hist-codes-lr1e3-e40) echo "$(args_for items-drop-hist-codes) --set sft.lr=0.001 --set sft.epochs=40 --set sft.patience=20" ;;
    items-drop-hist-codes-st10) echo "$(args_for items-drop-hist-codes) --set sft.window_stride=10" ;;
    # the SID design under id_codes: coarser codebooks (3 × 16, the old SCI row's best valid codebook), or four levels
    # of 16: a history row then shares a code row with about 100 / 7 / 1.6 items (3 × 32: 50 / 2 / 1)
    items-drop-hist-codes-k16) echo "$(args_for items-drop-hist-codes) --set sid.codebook_size=16" ;;
    items-drop-hist-codes-l4k16) echo "$(args_for items-drop-hist-codes) --set sid.codebook_size=16 --set sid.levels=4" ;;
    # issue 17: the id_codes row without its item head, so the list it serves is the SID beam and SFT keeps the
    # checkpoint of the best valid beam (the row with the head keeps the best fused list's, not the beam's)
    items-drop-hist-codes-nohead) echo "$(args_for items-drop-hist-codes) --set policy.item_head=none" ;;
    *) echo "unknown setting $1" >&2; return 1 ;;
  esac
}
what=${1:?screen | seeds | extra}; shift
case "$what" in
  screen)
    S=0
    for s in ${SCREEN:-items items-drop}; do
      # shellcheck disable=SC2046
      TAG=w64-ihead-$s SEEDS=0 experiments/i24_item_head_runs.sh $(args_for "$s") "$@"
    done ;;
  seeds)
    : "${SETTING:?}"
    for S in ${SEEDS:-1 2}; do  # one seed at a time: a setting's flags may name its seed's reference run
      # shellcheck disable=SC2046
      TAG=w64-ihead-$SETTING SEEDS=$S experiments/i24_item_head_runs.sh $(args_for "$SETTING") "$@"
    done ;;
  extra)
    : "${SETTING:?}"
    for S in ${SEEDS:-3 4}; do  # seeds beyond the reference's three: each run trains its own SASRec-50 beside it
      # shellcheck disable=SC2046
      TAG=w64-ihead-$SETTING SEEDS=$S experiments/i24_item_head_runs.sh $(args_for "$SETTING") \
        --set 'stages=[data,embed,sids,baselines,sft,eval]' --set 'baseline.models=[sasrec]' \
        --set baseline.max_len=50 "$@"
    done ;;
esac
