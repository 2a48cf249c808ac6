"""Ground-truth injection: put y* into every rollout group that missed it (off-policy positive).

With beam rollouts the group is the policy's own top-G; when y* is not among them (most groups: the policy
ranks it lower), the group's last rollout is replaced by y*. The reward then scores y* beside the policy's
candidates, so GRPO pushes y* up *against exactly the items that outrank it* — the ordering HR@K measures —
instead of only reshuffling the misses. The learner treats an injected sample's behaviour log-prob as its
current one (ratio 1: a plain policy-gradient term, no clipping artefact). The AdaGRPO gate is unaffected:
its tests only look at rollouts that are not y*.
"""

from __future__ import annotations

import numpy as np

from rl_align.sid.catalog import PAD


def inject_targets(sequences: np.ndarray, token_logprobs: np.ndarray, items: np.ndarray, targets: np.ndarray,
                   target_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Replace the last rollout of each group without y* by y*.

    Args:
        sequences: (B, G, T) rollout tokens (PAD-padded). token_logprobs: (B, G, T). items: (B, G), -1 invalid.
        targets: (B,) y* item index (-1 = unknown: never injected). target_tokens: (B, Tt) y*'s tokens + <eos>.
    Returns:
        sequences (B, G, max(T, Tt)), token_logprobs (same shape; 0 for injected rows), items (B, G) and
        injected (B, G) bool — new arrays, inputs untouched.
    """
    B, G, T = sequences.shape
    Tt = target_tokens.shape[1]
    W = max(T, Tt)
    seqs = np.full((B, G, W), PAD, dtype=sequences.dtype)
    seqs[:, :, :T] = sequences
    lps = np.zeros((B, G, W), dtype=token_logprobs.dtype)
    lps[:, :, :T] = token_logprobs
    items = items.copy()
    injected = np.zeros((B, G), dtype=bool)
    rows = np.where((targets >= 0) & ~(items == targets[:, None]).any(1))[0]
    seqs[rows, G - 1, :] = PAD
    seqs[rows, G - 1, :Tt] = target_tokens[rows]
    lps[rows, G - 1, :] = 0.0
    items[rows, G - 1] = targets[rows]
    injected[rows, G - 1] = True
    return seqs, lps, items, injected
