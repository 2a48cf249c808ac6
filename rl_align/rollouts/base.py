"""The rollout-engine contract, shared by the torch and vLLM engines.

An engine holds a policy and a catalog and, for a batch of prompts, returns N
SIDs per prompt — by beam search or sampling, trie-constrained or free — with
per-token log-probs and whether each SID is a catalog item. Weights are
replaced in place with :meth:`RolloutEngine.load_weights` and versioned.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from rl_align.utils.registry import Registry

ENGINES: Registry[type["RolloutEngine"]] = Registry("rollout engine")


@dataclass
class GenerationRequest:
    """What to generate.

    Attributes:
        input_ids: (N, P) left-padded prompt tokens. attention_mask: (N, P).
        n: sequences per prompt (the beam width for beam search).
        mode: "beam" (top-n by log-prob, deterministic) or "sample".
        constrained: restrict tokens to the catalog trie (0 invalid SIDs by construction).
        temperature: sampling temperature (mode="sample").
        banned_items: optional (N, B) item indices (-1 padded) that may not be generated (history
            exclusion); constrained mode only. Excluded at the prefix level: a trie node whose every item is
            banned is never entered, so each prompt still gets min(n, allowed items) distinct allowed items.
        seeds: optional (N,) int64 sampling seed per prompt: a prompt's samples then depend only on its
            seed, not on which other prompts share the batch (so 1 or N rollout workers sample the same).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    n: int
    mode: Literal["beam", "sample"] = "beam"
    constrained: bool = True
    temperature: float = 1.0
    banned_items: Optional[torch.Tensor] = None
    seeds: Optional[torch.Tensor] = None


@dataclass
class RolloutBatch:
    """Generated SIDs.

    Attributes:
        sequences: (N, n, T) int64 generated tokens (after the prompt), <pad> after <eos>.
        token_logprobs: (N, n, T) float32 log-prob of each generated token (0 at padding) under the policy's
            raw softmax (temperature 1, no trie mask) — what the learner recomputes — for every engine (the
            vLLM engine rescores its sequences to get them; see ``rl_align.rollouts.vllm_engine``).
        seq_logprob: (N, n) float32 sum of token_logprobs — for beam search, beams are sorted by it.
        items: (N, n) int64 catalog item of each sequence, -1 if it is not a valid SID.
        version: weight version that produced the batch.
    """

    sequences: torch.Tensor
    token_logprobs: torch.Tensor
    seq_logprob: torch.Tensor
    items: torch.Tensor
    version: int = 0

    @property
    def valid(self) -> torch.Tensor:
        """(N, n) bool: the sequence decodes to a catalog item."""
        return self.items >= 0


class RolloutEngine(abc.ABC):
    """Generates SIDs from a policy; implementations register under a name in ``ENGINES``."""

    version: int = 0

    @classmethod
    @abc.abstractmethod
    def from_policy_dir(cls, policy_dir: str, catalog, device: str = "cpu") -> "RolloutEngine":
        """The engine over a policy saved in ``policy_dir`` (how a Ray rollout worker builds it)."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> RolloutBatch:
        """Generate ``request.n`` SIDs per prompt."""

    @abc.abstractmethod
    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Replace the policy weights (same architecture) and record ``version``."""
