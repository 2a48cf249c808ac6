"""The default rollout engine: batched, KV-cached, trie-constrained beam search and sampling in torch.

All prompts of a batch and all their beams advance together: one forward pass
per generated token for the whole batch, the trie mask applied as one tensor
op, and the beam bookkeeping (top-B over B×V, cache reorder) vectorised. Works
on CPU or GPU (the trie arrays move with the model).
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel, StaticCache

from rl_align.policy.model import load_policy
from rl_align.rollouts import prefix_attention
from rl_align.rollouts.base import ENGINES, GenerationRequest, RolloutBatch, RolloutEngine
from rl_align.sid.catalog import EOS, PAD, SidCatalog

NEG = float("-inf")


@ENGINES.register("torch")
class TorchEngine(RolloutEngine):
    """Generates SIDs with an HF causal LM held in this process.

    Args:
        model: the policy (any HF causal LM over the catalog vocabulary).
        catalog: the SID catalog (its trie constrains decoding).
        device: where to run; defaults to the model's device.
        shared_prefix: decode with shared-prefix attention (each prompt's KV kept once, not once per
            beam/sample; see :mod:`rl_align.rollouts.prefix_attention`) when the model uses SDPA; False copies the
            prompt KV into every row (the classic way, kept for other attention kernels and for comparison).
    """

    def __init__(self, model: PreTrainedModel, catalog: SidCatalog, device: Optional[str | torch.device] = None,
                 version: int = 0, shared_prefix: bool = True) -> None:
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.catalog = catalog
        self.trie = catalog.trie.to(self.device)
        self.max_new_tokens = catalog.max_sid_len
        self.version = version
        # transformers ≥ 5.20 names the KV cache argument `cache`; older releases `past_key_values`
        params = inspect.signature(type(self.model).forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.shared_prefix = bool(shared_prefix) and prefix_attention.enable(self.model)

    @classmethod
    def from_policy_dir(cls, policy_dir: str, catalog: SidCatalog, device: str = "cpu") -> "TorchEngine":
        return cls(load_policy(policy_dir, catalog, device), catalog, device)

    # ------------------------------------------------------------------ weights
    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied head
        if missing or unexpected:
            raise ValueError(f"load_weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.version = int(version)

    # ------------------------------------------------------------------ model calls
    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor):
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **{self._cache_kw: cache})
        return out.logits[:, -1].float(), cache, pos[:, -1]

    def _replicate(self, cache: DynamicCache, reps: int, prompt_len: int):
        """Copy the prompt KV of N rows into a pre-allocated cache of N×reps rows with room for the SID.

        A static cache is written in place (no concatenation per step), and since the
        prompt part is identical for all rows of one prompt, beam reordering only
        touches the few generated positions (see :meth:`_reorder`).
        """
        L = prompt_len + self.max_new_tokens
        static = StaticCache(config=self.model.config, max_cache_len=L)
        for src, dst in zip(cache.layers, static.layers):
            n, h, _, d = src.keys.shape
            dv = src.values.shape[-1]
            # set the layer's metadata from a 1-row stand-in, then allocate N×reps rows uninitialised: the prompt
            # part is overwritten by one broadcast copy (no repeat_interleave temporary) and only the SID part is
            # zeroed (not-yet-written positions are masked but must be finite), instead of zero-filling it all
            dst.lazy_initialization(src.keys.new_empty(1, h, 1, d), src.values.new_empty(1, h, 1, dv))
            dst.keys = src.keys.new_empty(n * reps, h, L, d)
            dst.values = src.values.new_empty(n * reps, h, L, dv)
            dst.batch_size = n * reps
            dst.keys[:, :, prompt_len:].zero_()
            dst.values[:, :, prompt_len:].zero_()
            dst.keys.view(n, reps, h, L, d)[:, :, :, :prompt_len].copy_(src.keys[:, None])
            dst.values.view(n, reps, h, L, dv)[:, :, :, :prompt_len].copy_(src.values[:, None])
            dst.cumulative_length.fill_(prompt_len)
            dst.is_initialized = True
        return static

    def _expand(self, cache: DynamicCache, mask: torch.Tensor, reps: int):
        """The decode cache for ``reps`` continuations per prompt: shared-prefix, or the prompt KV copied per row."""
        if self.shared_prefix:
            return prefix_attention.SharedPrefixCache(cache, mask, reps, self.model.config)
        return self._replicate(cache, reps, mask.shape[1])

    @staticmethod
    def _reorder(cache, g: torch.Tensor, start: int, end: int) -> None:
        """Reorder rows of the generated positions [start, end) only (rows of one prompt share the prompt KV)."""
        if isinstance(cache, prefix_attention.SharedPrefixCache):
            cache.reorder(g)
            return
        if end <= start:
            return
        for layer in cache.layers:
            layer.keys[:, :, start:end] = layer.keys[g, :, start:end]
            layer.values[:, :, start:end] = layer.values[g, :, start:end]

    @staticmethod
    def _grow(mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The (R, L) attention mask one generated position longer (None: the shared-prefix cache needs none)."""
        return None if mask is None else torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)

    def _step(self, tok: torch.Tensor, cache, mask: Optional[torch.Tensor], last_pos: torch.Tensor):
        pos = last_pos + 1
        if isinstance(cache, prefix_attention.SharedPrefixCache):  # masks the prompt padding itself
            out = self.model(input_ids=tok[:, None], position_ids=pos[:, None], use_cache=True, prefix_cache=cache,
                             **{self._cache_kw: cache})
            return out.logits[:, -1].float(), cache, pos
        out = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos[:, None], use_cache=True,
                         **{self._cache_kw: cache})
        return out.logits[:, -1].float(), cache, pos

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, request: GenerationRequest) -> RolloutBatch:
        ids = request.input_ids.to(self.device)
        mask = request.attention_mask.to(self.device)
        banned = request.banned_items
        if banned is not None and not request.constrained:
            raise ValueError("banned_items needs constrained decoding (the trie is what excludes them)")
        dead = self.trie.dead_nodes(banned) if banned is not None else None
        if request.n < 1:
            raise ValueError(f"n must be >= 1, got {request.n}")
        if request.mode == "beam":
            return self._beam(ids, mask, request.n, request.constrained, dead)
        if request.mode == "sample":
            return self._sample(ids, mask, request.n, request.constrained, request.temperature, dead,
                                request.seeds)
        raise ValueError(f"mode must be 'beam' or 'sample', got {request.mode!r}")

    def _beam(self, ids, mask, B: int, constrained: bool, dead) -> RolloutBatch:
        N = ids.shape[0]
        logits, cache, last_pos = self._prefill(ids, mask)
        logp = F.log_softmax(logits, -1)
        V = logp.shape[1]
        state = self.trie.root(N)
        arange_n = torch.arange(N, device=self.device)
        cand = self.trie.mask_logits(logp, state, dead=dead, group=arange_n) if constrained else logp
        k0 = min(B, V)
        scores, tok = cand.topk(k0, dim=1)
        if k0 < B:  # more beams than tokens: pad with dead beams
            scores = torch.cat([scores, scores.new_full((N, B - k0), NEG)], 1)
            tok = torch.cat([tok, tok.new_full((N, B - k0), PAD)], 1)
        rep = torch.arange(N, device=self.device).repeat_interleave(B)
        P = ids.shape[1]
        cache = self._expand(cache, mask, B)
        mask = None if self.shared_prefix else mask[rep]  # the shared-prefix cache masks the prompt padding itself
        last_pos = last_pos[rep]
        scores = scores.flatten()
        live = torch.isfinite(scores)  # a -inf candidate (nothing allowed left) is a dead beam, never an item
        tok = torch.where(live, tok.flatten(), torch.full_like(rep, PAD))
        seqs = [tok]
        lps = [torch.where(live, logp[rep, tok], torch.zeros_like(scores))]
        state = torch.where(live, self.trie.step(state[rep], tok), torch.full_like(rep, -1))
        done = (tok == EOS) | ~live
        for _ in range(1, self.max_new_tokens):
            if bool(done.all()):
                break
            mask = self._grow(mask)
            logits, cache, last_pos = self._step(tok, cache, mask, last_pos)
            logp = F.log_softmax(logits, -1)
            cand = self.trie.mask_logits(logp, state, dead=dead, group=rep) if constrained else logp.clone()
            cand[done] = NEG
            cand[done, PAD] = 0.0  # a finished beam carries its score forward through <pad>
            total = (scores[:, None] + cand).view(N, B * V)
            sc, idx = total.topk(B, dim=1)
            g = (torch.arange(N, device=self.device)[:, None] * B + idx // V).flatten()
            tok = (idx % V).flatten()
            live = torch.isfinite(sc.flatten())
            self._reorder(cache, g, P, P + len(seqs))
            mask = mask[g] if mask is not None else None
            last_pos, state, done = last_pos[g], state[g], done[g]
            seqs = [s[g] for s in seqs]
            lps = [lp[g] for lp in lps]
            stop = done | ~live
            lp_tok = torch.where(stop, torch.zeros_like(sc.flatten()), logp[g, tok])
            state = torch.where(done, state, torch.where(live, self.trie.step(state, tok), torch.full_like(state, -1)))
            tok = torch.where(stop, torch.full_like(tok, PAD), tok)
            seqs.append(tok)
            lps.append(lp_tok)
            done = stop | (tok == EOS)
            scores = sc.flatten()
        return self._finish(seqs, lps, state, done, N, B, scores)

    def _sample(self, ids, mask, n: int, constrained: bool, temperature: float, dead,
                seeds: Optional[torch.Tensor] = None) -> RolloutBatch:
        N = ids.shape[0]
        # per-prompt generators: Gumbel-max sampling whose noise depends only on the prompt's seed
        gens = None
        if seeds is not None:
            if seeds.shape != (N,):
                raise ValueError(f"seeds must have shape ({N},), got {tuple(seeds.shape)}")
            gens = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        logits, cache, last_pos = self._prefill(ids, mask)
        rep = torch.arange(N, device=self.device).repeat_interleave(n)
        cache = self._expand(cache, mask, n)
        mask = None if self.shared_prefix else mask[rep]
        last_pos, logits = last_pos[rep], logits[rep]
        R = N * n
        state = self.trie.root(R)
        done = torch.zeros(R, dtype=torch.bool, device=self.device)
        seqs, lps = [], []
        for t in range(self.max_new_tokens):
            logp = F.log_softmax(logits, -1)
            scaled = logp / temperature
            cand = self.trie.mask_logits(scaled, state, dead=dead, group=rep) if constrained else scaled
            stop = ~torch.isfinite(cand).any(1) | done  # finished, or nothing allowed (banned everything)
            cand = torch.where(stop[:, None], torch.zeros_like(cand), cand)
            if gens is None:
                tok = torch.multinomial(F.softmax(cand, -1), 1).squeeze(1)
            else:
                u = torch.stack([torch.rand(n, cand.shape[1], generator=g) for g in gens]).view(R, -1)
                gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7))).to(cand.device)
                tok = (cand + gumbel).argmax(1)
            tok = torch.where(stop, torch.full_like(tok, PAD), tok)
            lps.append(torch.where(stop, torch.zeros_like(logp[:, 0]), logp.gather(1, tok[:, None]).squeeze(1)))
            seqs.append(tok)
            state = torch.where(stop, torch.where(done, state, torch.full_like(state, -1)), self.trie.step(state, tok))
            done = done | (tok == EOS) | stop
            if t + 1 == self.max_new_tokens or bool(done.all()):
                break
            mask = self._grow(mask)
            logits, cache, last_pos = self._step(tok, cache, mask, last_pos)
        seq_lp = torch.stack(lps, 1).sum(1)
        return self._finish(seqs, lps, state, done, N, n, seq_lp)

    def _finish(self, seqs, lps, state, done, N, n, scores) -> RolloutBatch:
        S = torch.stack(seqs, 1)
        LP = torch.stack(lps, 1)
        ended = (S == EOS).any(1) & torch.isfinite(scores)  # a dead (-inf) row is never an item
        items = torch.where(ended & done, self.trie.item_of(state), torch.full_like(state, -1))
        T = S.shape[1]
        return RolloutBatch(
            sequences=S.view(N, n, T).cpu(),
            token_logprobs=LP.view(N, n, T).float().cpu(),
            seq_logprob=scores.view(N, n).float().cpu(),
            items=items.view(N, n).cpu(),
            version=self.version,
        )
