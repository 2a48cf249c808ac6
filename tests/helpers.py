"""Helpers shared by test modules (tests/ is on sys.path under pytest's default import mode)."""

import torch

# the tiny ML-100K run the alignment tests (RL and preference objectives) share: everything but ranker and rl
TINY_RUN = {
    "wandb": False,
    "sid": {"codebook_size": 32, "collision": "reassign"},
    "policy": {"hidden_size": 64, "num_layers": 1, "num_heads": 1, "intermediate_size": 128},
    "sft": {"epochs": 1, "batch_size": 64, "lr": 0.004, "warmup_steps": 10, "eval_users": 50, "eval_every": 1,
            "num_workers": 1, "cpus_per_worker": 2},
    "eval": {"beams": 10, "batch_size": 256, "free_beams": 5, "ks": [1, 5, 10]},
    "exposure": {"slate_size": 10},
    "reward": {"cpus_per_replica": 0.5},
}


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
