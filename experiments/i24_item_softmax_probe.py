"""Issue 24 probe: does an item-level softmax over SID-composed item vectors help the SID policy? (LIGER-style)

SASRec scores every item with a free 64-d vector; the SID policy only has its 96 code-token embeddings. This probe
adds, at every position that predicts a target item's first code, a full softmax over the catalog whose item
vectors are the sums of the item's SID-token input embeddings (no per-item parameter), optionally through a learned
H × H projection of the policy state, trained beside the NLL (``--weight``). It then ranks three ways on valid and
test: the constrained beam (the policy as evaluated everywhere else), the dense head alone over all unseen items,
and the beam's 20 candidates re-scored by ``log π(SID) + β · log softmax_dense`` for β in ``--betas``.

It re-implements the plain SFT loop without Ray or DeepSpeed (same windows, schedule, optimiser, seed) so that the
extra head can be tried in minutes; with ``--weight 0`` it reproduces the framework's 64-wide row
(``runs/i24-w64base-s0``: valid 0.2280, test 0.1877) exactly. Per-user target ranks of every evaluation go to
``--out`` for paired tests.

    python experiments/i24_item_softmax_probe.py runs/i24-w64base-s0 --weight 0.5 --proj --out runs/probe.json

``--item-vectors free`` gives the head a free item table instead (the hybrid with per-item parameters that LIGER-
style retrievers and SASRec's output layer have), to ask whether SID-composed vectors are what holds the head back.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from rl_align.config import load_config
from rl_align.eval.evaluate import eval_set, metrics, rank_with_engine, target_ranks
from rl_align.policy.data import build_prompts, events_to_items, events_to_users, left_aligned, windows_to_batch
from rl_align.policy.logprobs import item_logprobs
from rl_align.policy.model import build_policy, next_token_loss
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sft.schedule import epoch_events, warmup_cosine
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import atomic_path, load_npz


class ItemSoftmax(torch.nn.Module):
    """Scores every catalog item from a policy state: ``(P h) · Σ_l E[c_l(i)]`` with E the policy's input
    embeddings and P the identity unless ``proj``; with ``free`` the item vectors are a table of their own
    (n_items, H), SASRec's output layer, instead of the SID sums. h: (N, H) → (N, n_items) logits."""

    def __init__(self, model, catalog: SidCatalog, proj: bool, free: bool = False) -> None:
        super().__init__()
        self.emb = model.get_input_embeddings()
        self.table = None
        if free:
            self.table = torch.nn.Embedding(catalog.n_items, self.emb.weight.shape[1])
            torch.nn.init.normal_(self.table.weight, std=0.02)
        tok = torch.as_tensor(catalog.tokens)                                     # (n_items, T)
        self.register_buffer("tok", tok.clamp(min=0))
        lengths = torch.as_tensor(catalog.token_lengths - 1)                      # SID tokens, <eos> left out
        self.register_buffer("code", torch.arange(tok.shape[1])[None] < lengths[:, None])
        H = self.emb.weight.shape[1]
        self.proj = torch.nn.Linear(H, H, bias=False) if proj else None
        if self.proj is not None:
            torch.nn.init.eye_(self.proj.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            items = self.table.weight                                               # (n_items, H)
        else:
            items = (self.emb.weight[self.tok] * self.code[..., None]).sum(1)     # (n_items, H)
        return (self.proj(h) if self.proj is not None else h) @ items.T


def target_items(items: np.ndarray, n_target: np.ndarray) -> torch.Tensor:
    """The target items of a batch's windows, row by row in order: (sum n_target,)."""
    w = left_aligned(items)
    return torch.as_tensor(np.concatenate([r[r >= 0][(r >= 0).sum() - k:] for r, k in zip(w, n_target)]))


def batch_loss(model, head, catalog, split, events, n_target, weight):
    """NLL of the SID tokens + ``weight`` × the item softmax's cross-entropy at each target's first code."""
    items = events_to_items(events, split["seq_items"])
    b = windows_to_batch(items, catalog, n_target, events_to_users(events, split["seq_offsets"]))
    labels = b.pop("labels")
    h = model.model(**b).last_hidden_state
    loss = next_token_loss(model.lm_head(h), labels)
    if weight > 0:
        nxt = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
        lo = catalog.layout.offsets[0]
        start = (nxt >= lo) & (nxt < lo + catalog.layout.codebook_sizes[0])      # predicts a target's first code
        loss = loss + weight * torch.nn.functional.cross_entropy(head(h[start]), target_items(items, n_target))
    return loss


@torch.no_grad()
def dense_logprobs(model, head, catalog, es) -> np.ndarray:
    """(N, n_items) log softmax of the item head at each prompt's last position."""
    out = []
    for s in range(0, es.targets.size, 256):
        ids, mask = build_prompts(es.history[s:s + 256], catalog, es.users[s:s + 256])
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        h = model.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
        out.append(torch.log_softmax(head(h), -1))
    return torch.cat(out).numpy()


def first_occurrence(cand: np.ndarray) -> np.ndarray:
    """(N, C) mask of valid entries that are the first of their item in the row."""
    keep = cand >= 0
    for j in range(1, cand.shape[1]):
        keep[:, j] &= ~(cand[:, :j] == cand[:, j:j + 1]).any(1)
    return keep


def rankings(model, head, catalog, split, part, beams, betas, union: int = 0
             ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Ranked lists (N, beams) of the beam, the dense head (seen items masked) and each fused β (the beam's
    candidates re-scored; with ``union`` > 0 also ``union<β>``: the beam's candidates and the dense head's top
    ``union`` items, all scored by ``log π(SID) + β · log softmax_dense``); the (N,) targets."""
    model.eval()
    es = eval_set(split, part)
    ranked, scores = rank_with_engine(TorchEngine(model, catalog, "cpu"), catalog, es, beams, True, 128)
    out = {"beam": ranked}
    if head is not None:
        d = dense_logprobs(model, head, catalog, es)
        masked = d.copy()
        rows = np.repeat(np.arange(es.seen.shape[0]), es.seen.shape[1])
        seen = es.seen.reshape(-1)
        masked[rows[seen >= 0], seen[seen >= 0]] = -np.inf
        out["dense"] = np.argsort(-masked, 1, kind="stable")[:, :beams]
        for beta in betas:
            fused = np.where(ranked >= 0, scores + beta * np.take_along_axis(d, np.maximum(ranked, 0), 1), -np.inf)
            out[f"fused{beta:g}"] = np.take_along_axis(ranked, np.argsort(-fused, 1, kind="stable"), 1)
        if union:
            cand = np.concatenate([ranked, out["dense"][:, :union]], 1)           # (N, beams + union)
            cand = np.where(first_occurrence(cand), cand, -1)
            lp = item_logprobs(model, catalog, es.history, es.users, cand)
            for beta in betas:
                fused = np.where(cand >= 0, lp + beta * np.take_along_axis(d, np.maximum(cand, 0), 1), -np.inf)
                order = np.argsort(-fused, 1, kind="stable")[:, :beams]
                out[f"union{beta:g}"] = np.where(np.take_along_axis(fused, order, 1) > -np.inf,
                                                 np.take_along_axis(cand, order, 1), -1)
    model.train()
    return out, es.targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", help="a finished 64-wide row run (its catalog, split and config are read)")
    ap.add_argument("--weight", type=float, default=0.5, help="weight of the item softmax (0 = the plain SFT loss)")
    ap.add_argument("--proj", action="store_true", help="a learned H x H projection of the state for the item head")
    ap.add_argument("--item-vectors", choices=["composed", "free"], default="composed",
                    help="the item head's vectors: sums of the item's SID-token embeddings, "
                         "or a free (n_items, H) table")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="fusion weights to report")
    ap.add_argument("--union", type=int, default=0,
                    help="also fuse over the beam's candidates and the dense head's top N (0 = off)")
    ap.add_argument("--out", required=True, help="JSON of per-epoch metrics and per-user target ranks")
    a = ap.parse_args()
    cfg = load_config(f"{a.run_dir}/config.yaml")
    torch.set_num_threads(2)
    catalog = SidCatalog.load(f"{a.run_dir}/sids/catalog")
    split = load_npz(f"{a.run_dir}/data/split.npz")
    sft = cfg.sft
    model = build_policy(cfg.policy, catalog, cfg.data.max_history, seed=sft.seed)
    head = ItemSoftmax(model, catalog, a.proj, a.item_vectors == "free") if a.weight > 0 else None
    extra = [m for m in ((head.proj, head.table) if head is not None else ()) if m is not None]
    params = list(model.parameters()) + [p for m in extra for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=sft.lr, weight_decay=sft.weight_decay, betas=(0.9, 0.98))
    window = cfg.data.max_history + 1
    n_windows = epoch_events(split, window, sft.seed, 0)[0].shape[0]
    sched = warmup_cosine(opt, sft.warmup_steps, sft.epochs * max(1, n_windows // sft.batch_size))
    model.train()
    log, t0 = [], time.time()
    for epoch in range(sft.epochs):
        events, n_target = epoch_events(split, window, sft.seed, epoch)
        losses = []
        for s in range(0, events.shape[0] - sft.batch_size + 1, sft.batch_size):
            loss = batch_loss(model, head, catalog, split, events[s:s + sft.batch_size],
                              n_target[s:s + sft.batch_size], a.weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, sft.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.time() - t0}
        if (epoch + 1) % sft.eval_every == 0 or epoch + 1 == sft.epochs:
            for part in ("valid", "test"):
                ranked_by, targets = rankings(model, head, catalog, split, part, cfg.eval.beams, a.betas, a.union)
                for name, ranked in ranked_by.items():
                    rec[f"{part}/{name}"] = {**metrics(ranked, targets, [10]),
                                             "ranks": target_ranks(ranked, targets).tolist()}
        print(json.dumps({k: (v if not isinstance(v, dict) else {m: x for m, x in v.items() if m != "ranks"})
                          for k, v in rec.items()}), flush=True)
        log.append(rec)
    with atomic_path(a.out) as tmp:
        tmp.write_text(json.dumps({"run_dir": a.run_dir, "weight": a.weight, "proj": a.proj,
                                   "item_vectors": a.item_vectors, "epochs": log}))


if __name__ == "__main__":
    main()
