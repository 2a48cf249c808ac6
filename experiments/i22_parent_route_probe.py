"""Issue 22: in a bucket catalog, rank *every* new item through its parent prefix, as the RQ cold expansion does.

The bucket cold mixture (``Buckets.expand``) gives a new item a share of its own bucket's code mass, so a new item is
reached only when a beam ends in its bucket's exact code. RQ-KMeans's expansion reaches a new item through any beam
that passes through its parent prefix, and 20 beams pass through many more prefixes than they end in. The eleventh
session routed only the items of all-new buckets that way (and added the parents' mass to the buckets' Z(x)). This
probe asks the clean question on the same checkpoints and the same beams: with the RQ rule for every new item,

    P(i | x) = (1 - α) · P(code(i) | x) · P_warm(i | code, x)                    (items with training interactions)
             + α · P(parent(i) | x) / (n_new(parent(i)) · Z_parents(x))          (items without)

(content tie-break inside a parent, as RQ-KMeans has), how do cold, valid and test HR@10 compare with the saved rule?
Rows: ``bucket`` (the saved rule; reproduces ``rl-align eval RUN --split all --cold-expansion``), ``parents`` (the
RQ rule above for every new item) and ``parents-T<T>`` (with ``--temps``: a parent's share split by a softmax of
content similarity at T instead of evenly). Run on an RQ-KMeans run, ``bucket`` is its own rule (no buckets) and the
others are the same.

    python experiments/i22_parent_route_probe.py runs/i22f-bucket-s0 runs/i22f-rqk-s0 --temps 0.03 0.1 0.3
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from rl_align.data.split import train_popularity
from rl_align.eval.cold_expand import (
    ColdIndex,
    cold_route_items,
    expand_with_cold,
    measured_cold_prior,
    parent_shares,
    parents_log_mass,
    reached_parents,
    user_queries,
)
from rl_align.eval.evaluate import eval_set, metrics, target_ranks
from rl_align.eval.run_eval import policy_dir
from rl_align.policy.data import build_prompts
from rl_align.policy.model import load_policy
from rl_align.rollouts.base import GenerationRequest
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import load_npz
from rl_align.utils.ranking import merge_and_rank


def warm_joint(catalog: SidCatalog, reps: np.ndarray, slp: np.ndarray, hist: np.ndarray, prior: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Items (N, B, S) of each beam's bucket and their joint log-score (N, B, S): log(1 - α) + log P(code | x) +
    the scorer's log-share among the bucket's *trained* items (new items get -inf: they come only by parent)."""
    B = catalog.buckets
    items, valid, logp = B._ordered(reps, hist, 0.0, None)
    warm = valid & ~B._new(items, valid)
    lw = np.where(warm, logp, -np.inf)
    norm = np.logaddexp.reduce(lw, axis=2, keepdims=True)       # renormalise without the new items
    joint = np.where(warm & np.isfinite(slp)[..., None], slp[..., None] + lw - np.where(np.isfinite(norm), norm, 0)
                     + math.log1p(-prior), -np.inf)
    return items, joint


def content_split(cold: dict[int, float], parents: dict, index: ColdIndex, vecs: np.ndarray, q: np.ndarray,
                  temp: float) -> None:
    """In place: each parent's cold share split by softmax(cosine(item, q) / T) over its new items, not evenly."""
    for key in parents:
        kids = index.children[key]
        lg = (vecs[kids] @ q) / temp
        for c, v in zip(kids.tolist(), (lg - np.logaddexp.reduce(lg)).tolist()):
            cold[c] += v + math.log(kids.size)


def parent_rule(res, catalog: SidCatalog, hist: np.ndarray, seen: np.ndarray, index: ColdIndex, prior: float,
                k: int, vecs: np.ndarray, temps: list[float]) -> dict[float, np.ndarray]:
    """T → (N, k) ranked items, for T = 0 (new items' parent share split evenly) and each of ``temps`` (split by
    content, :func:`content_split`): trained items by their bucket's mass (:func:`warm_joint`), new items only
    through their parent prefix (``index`` holds every new item). Beams, warm scores and parents are computed once."""
    reps, slp = res.items.numpy(), res.seq_logprob.numpy()
    items, joint = warm_joint(catalog, reps, slp, hist, prior)
    seqs, cum = res.sequences.numpy(), np.cumsum(res.token_logprobs.numpy(), axis=2)
    q = user_queries(hist, vecs)
    out = {t: np.full((reps.shape[0], k), -1, np.int64) for t in [0.0, *temps]}
    for r in range(reps.shape[0]):
        warm: dict[int, float] = {}
        ok = np.isfinite(joint[r])
        for it, v in zip(items[r][ok].tolist(), joint[r][ok].tolist()):
            warm[it] = max(warm.get(it, -np.inf), v)
        parents = reached_parents(seqs[r], cum[r], slp[r], reps[r], index)
        even = parent_shares(parents, index, parents_log_mass(parents), math.log(prior)) if parents else {}
        for t, ranked in out.items():
            cold = dict(even)
            if t and cold:
                content_split(cold, parents, index, vecs, q[r], t)
            cand, _ = merge_and_rank(dict(warm), cold, seen[r], k, lambda c, qq=q[r]: vecs[c] @ qq)
            ranked[r, : cand.size] = cand
    return out


def probe(run: Path, beams: int, batch: int, temps: list[float]) -> dict:
    """HR@10 on valid, test and cold of the saved rule and of the parent rule, and per-case cold hits."""
    catalog = SidCatalog.load(run / "sids" / "catalog")
    split = load_npz(run / "data" / "split.npz")
    pop = train_popularity(split, catalog.n_items)
    engine = TorchEngine(load_policy(policy_dir(run, "sft"), catalog), catalog)
    prior = measured_cold_prior(split)
    vecs = np.load(run / "embed" / "item_emb.npy").astype(np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    all_new = ColdIndex.build(catalog, np.flatnonzero(pop <= 0))
    saved = ColdIndex.build(catalog, cold_route_items(catalog, pop))
    out: dict = {"prior": prior}
    for part in ("valid", "test", "cold"):
        es = eval_set(split, part)
        rows = {"bucket": [], "parents": [], **{f"parents-T{t:g}": [] for t in temps}}
        for s in range(0, es.targets.size, batch):
            hist, seen = es.history[s: s + batch], es.seen[s: s + batch]
            ids, mask = build_prompts(hist, catalog, es.users[s: s + batch])
            res = engine.generate(GenerationRequest(ids, mask, n=beams, mode="beam", constrained=True,
                                                    banned_items=torch.from_numpy(seen)))
            if catalog.has_buckets:
                r0, _ = catalog.buckets.expand(res.items.numpy(), res.seq_logprob.numpy(), hist, beams, seen,
                                               cold_prior=prior)
                by_t = parent_rule(res, catalog, hist, seen, all_new, prior, beams, vecs, temps)
            else:
                r0, _ = expand_with_cold(res.sequences.numpy(), res.token_logprobs.numpy(), res.seq_logprob.numpy(),
                                         res.items.numpy(), saved, prior, beams, seen, user_queries(hist, vecs), vecs)
                by_t = {t: r0 for t in [0.0, *temps]}
            rows["bucket"].append(r0)
            for t, ranked in by_t.items():
                rows["parents" if t == 0 else f"parents-T{t:g}"].append(ranked)
        for name, parts in rows.items():
            ranked = np.concatenate(parts)
            out.setdefault(name, {})[part] = {"hr@10": metrics(ranked, es.targets, [10])["hr@10"],
                                              "target_rank": target_ranks(ranked, es.targets).tolist()}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--temps", nargs="*", type=float, default=[], help="content softmax temperatures inside a parent")
    a = ap.parse_args()
    torch.manual_seed(0)
    print("| run | rule | valid HR@10 | test HR@10 | cold HR@10 |")
    print("|---|---|---|---|---|")
    for run in a.runs:
        res = probe(run, a.beams, a.batch, a.temps)
        (run / "eval" / "parent_route_probe.json").write_text(json.dumps(res))
        for name in res:
            if name == "prior":
                continue
            m = res[name]
            print(f"| {run.name} | {name} | {m['valid']['hr@10']:.4f} | {m['test']['hr@10']:.4f} | "
                  f"{m['cold']['hr@10']:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
