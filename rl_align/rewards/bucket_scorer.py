"""A reward model as the within-bucket scorer: the items under a bucket code ordered by what the ranker knows.

``sid.bucket_scorer`` picks how the items sharing a code are ordered (``rl_align/sid/buckets.py``). The
``content`` and ``popularity`` scorers are built with the catalog; a reward model (the DIN ranker, SASRec,
GRU4Rec, the ensemble: ``rl_align/rewards/scorers.py``) is trained after the sids stage, on training events
only, so it is attached to a run's catalog at evaluation::

    rl-align eval RUN --bucket-scorer reward:sasrec [--bucket-temperature 1]

    P(item | code, user) ∝ (1 + training count) · σ(z)^(1 / T),   z = the reward model's click logit

T → ∞ returns the popularity scorer. ``reward:sasrec+content`` puts the reward's term on top of the catalog's saved
scorer instead of the bare popularity prior (what the model knows of the user, and what the item's vector says)::

    P(item | code, user) ∝ (1 + training count) · exp(cos(item, history) / T_c) · σ(z)^(1 / T)

``experiments/bucket_scorer_choice.py RUN --reward-models sasrec din sasrec+content`` compares them with the others
on valid, from one beam search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rl_align.data.split import train_popularity
from rl_align.rewards.scorers import load_scorer, scorer_path
from rl_align.sid.buckets import BUCKET_SCORERS, Buckets, BucketScorer
from rl_align.utils.io import load_npz, read_json


@BUCKET_SCORERS.register("reward")
class RewardModelScorer(BucketScorer):
    """Within-bucket logits ``log(1 + count) + log σ(z) / T`` from a reward model with the ranker's call.

    Args:
        popularity: (n_items,) training interaction counts. temperature: T.
        model: ``model(users (B,), history (B, H), candidates (B, C)) → (B, C)`` click logits.
        base: a saved-kind scorer whose logits replace ``log(1 + count)`` (None: the popularity prior alone).
    """

    needs = ("popularity",)
    attach_only = True

    def __init__(self, popularity: np.ndarray, vectors: Optional[np.ndarray] = None, temperature: float = 1.0,
                 model: Optional[nn.Module] = None, base: Optional[BucketScorer] = None) -> None:
        super().__init__(popularity, None, temperature)
        if model is None:
            raise ValueError("the reward bucket scorer needs a reward model (rl_align.rewards.scorers.load_scorer)")
        if base is not None and base.attach_only:
            raise ValueError(f"the reward bucket scorer's base must be a saved scorer, got {base.registry_name!r}")
        self.model = model.eval()
        self.base = base

    @property
    def label(self) -> str:
        """``reward`` or ``reward+<base scorer>``."""
        return self.registry_name + (f"+{self.base.registry_name}" if self.base is not None else "")

    @torch.no_grad()
    def score(self, history: np.ndarray, cand: np.ndarray, users: Optional[np.ndarray] = None) -> np.ndarray:
        """(N, H) histories, (N, C) candidates, (N,) users → (N, C) float64 logits."""
        if users is None:
            raise ValueError("the reward bucket scorer needs each row's user (a caller passed users=None)")
        z = self.model(torch.as_tensor(np.asarray(users), dtype=torch.long),
                       torch.as_tensor(np.asarray(history), dtype=torch.long),
                       torch.as_tensor(np.maximum(cand, 0), dtype=torch.long))
        base = self._log_prior(cand) if self.base is None else self.base.score(history, cand, users)
        return base + F.logsigmoid(z.double()).numpy() / self.temperature


def reward_bucket_scorer(run_path: str | Path, model_name: str, temperature: float = 1.0,
                         over: Optional[str] = None) -> RewardModelScorer:
    """The within-bucket scorer built on run ``run_path``'s trained reward model ``model_name`` (din, sasrec,
    gru4rec, ensemble) and its training popularity; ``over`` = the name of the run's saved scorer (e.g.
    ``content``) to add the reward's term to (None: the popularity prior)."""
    run_path = Path(run_path)
    base = None
    if over is not None:
        base = Buckets.load_scorer(run_path / "sids" / "catalog" / "buckets.npz")
        if base is None or base.registry_name != over:
            raise ValueError(f"reward:{model_name}+{over}: {run_path} has no saved {over!r} bucket scorer (it has "
                             f"{base.registry_name if base is not None else 'none'!r})")
    path = scorer_path(run_path, model_name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained reward model {model_name!r} (train it: rl-align ranker "
                                f"scorers {run_path} {model_name})")
    items = read_json(run_path / "data" / "items.json")["item_ids"]
    split = load_npz(run_path / "data" / "split.npz")
    pop = train_popularity(split, len(items))
    return RewardModelScorer(pop, None, temperature, load_scorer(path, expect_items=items), base)
