"""Exponential moving average of a model's weights (pure torch).

SFT on a small log (ML-100K: ~80 optimizer steps an epoch) gives a policy whose
ranking moves a lot from one epoch to the next; validating and saving the
average of the recent weights instead of the last iterate smooths that out
(Polyak averaging, as in "Mean teachers" / SWA). The shadow copy is kept in
fp32 on the parameters' device, updated after every optimizer step:

    shadow ← d·shadow + (1 − d)·θ,   d = min(decay, (1 + t) / (10 + t))

the warm-up term keeping the first steps from being dominated by the random
initialisation. ``applied(module)`` swaps the shadow into the module for
validation and saving, and puts the trained weights back afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class WeightEma:
    """Shadow weights of every trainable parameter of ``module``.

    Args:
        module: the model being trained (full parameters on this rank: ZeRO ≤ 2 or DDP).
        decay: long-run decay d ∈ (0, 1); the average spans about 1 / (1 − d) steps.
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"sft.ema_decay must be in (0, 1) to average weights, got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().float().clone() for n, p in module.named_parameters() if p.requires_grad}

    def rate(self) -> float:
        """The decay used for the next update (warm-up: (1 + t) / (10 + t) until it reaches ``decay``)."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """Fold the module's current weights into the shadow (call once after each optimizer step)."""
        d = self.rate()
        for n, p in module.named_parameters():
            s = self.shadow.get(n)
            if s is not None:
                s.mul_(d).add_(p.detach().float(), alpha=1.0 - d)
        self.updates += 1

    @contextmanager
    @torch.no_grad()
    def applied(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Temporarily load the shadow weights into ``module``; the trained weights are restored on exit."""
        saved = {}
        for n, p in module.named_parameters():
            s = self.shadow.get(n)
            if s is not None:
                saved[n] = p.detach().clone()
                p.copy_(s.to(p.dtype))
        try:
            yield module
        finally:
            for n, p in module.named_parameters():
                if n in saved:
                    p.copy_(saved[n])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Shadow tensors plus the update count (as a 0-d tensor, so the whole state fits one safetensors file)."""
        out = {f"shadow.{n}": t.detach().cpu().contiguous() for n, t in self.shadow.items()}
        out["updates"] = torch.tensor(self.updates, dtype=torch.int64)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; refuses a state whose parameter names or shapes differ."""
        names = {k[len("shadow."):] for k in state if k.startswith("shadow.")}
        if names != set(self.shadow):
            missing, extra = sorted(set(self.shadow) - names), sorted(names - set(self.shadow))
            raise ValueError(f"EMA checkpoint does not match the model: missing {missing[:3]}, unexpected {extra[:3]}")
        for n, s in self.shadow.items():
            t = state[f"shadow.{n}"]
            if t.shape != s.shape:
                raise ValueError(f"EMA checkpoint: {n} has shape {tuple(t.shape)}, the model {tuple(s.shape)}")
            s.copy_(t.to(s.device, s.dtype))
        self.updates = int(state["updates"])
