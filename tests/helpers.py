"""Helpers shared by test modules (tests/ is on sys.path under pytest's default import mode)."""

import torch


def all_items_logprob(model, cat, ids, mask):
    """Exact log-prob of every catalog item's SID after each prompt (brute force, no cache)."""
    out = torch.empty(ids.shape[0], cat.n_items)
    for i in range(cat.n_items):
        toks = torch.tensor(cat.item_tokens(i))
        full = torch.cat([ids, toks[None].expand(ids.shape[0], -1)], 1)
        m = torch.cat([mask, torch.ones(ids.shape[0], toks.numel(), dtype=mask.dtype)], 1)
        pos = (m.cumsum(1) - 1).clamp(min=0)
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=full, attention_mask=m, position_ids=pos).logits.float(), -1)
        P = ids.shape[1]
        out[:, i] = sum(lp[:, P - 1 + j, toks[j]] for j in range(toks.numel()))
    return out
