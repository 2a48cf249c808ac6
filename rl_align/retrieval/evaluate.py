"""Evaluate a trained dual tower: exact search, faiss's IVF-PQ and SCI's dual-view index on the same queries.

Per index and nprobe: HR@{10,50,100} and NDCG@10 on leave-one-out valid/test (each user's seen items removed
from the list), *recall@100* = the share of exact search's top-100 (no masking) that the index's top-100 holds,
and the mean distance computations per query (coarse centroids + codes scanned; n_items for exact search).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from rl_align.config import RunConfig
from rl_align.eval.evaluate import eval_set, metrics, target_ranks
from rl_align.policy.data import last_items
from rl_align.retrieval.index import DualViewIndex, ExactIndex, ItemIndex, IvfPqIndex
from rl_align.retrieval.train import KS, load_model
from rl_align.utils.io import load_npz, write_json, write_npy, write_text

log = logging.getLogger("rl_align")


def drop_seen(ids: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """(N, k') ranked ids (-1 = none), (N, S) seen items (-1 pad) → (N, k) first ``k`` unseen ids, -1 filled."""
    out = np.full((ids.shape[0], k), -1, np.int64)
    for r in range(ids.shape[0]):
        s = set(seen[r][seen[r] >= 0].tolist())
        row = [i for i in ids[r].tolist() if i >= 0 and i not in s][:k]
        out[r, : len(row)] = row
    return out


def recall_vs_exact(ids: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of exact search's top-k (rows of ``exact``) found in ``ids``' top-k."""
    k = exact.shape[1]
    return float(np.mean([len(set(a[:k].tolist()) & set(b.tolist())) / k for a, b in zip(ids, exact)]))


def score_index(index: ItemIndex, q: np.ndarray, seen: np.ndarray, targets: np.ndarray, exact100: np.ndarray,
                nprobe: int = 1) -> dict:
    """One index at one nprobe on (N, d) queries: ranking metrics, each user's 0-based target rank (-1 = outside
    the top 100; for paired tests), recall@100 vs exact, distance computations."""
    k_all = min(index.ntotal, max(KS) + int((seen >= 0).sum(1).max()))
    t = time.perf_counter()
    _, ids, dc = index.search(q, k_all, nprobe)
    secs = time.perf_counter() - t
    ranked = drop_seen(ids, seen, max(KS))
    m = metrics(ranked, targets, list(KS))
    return {"index": index.kind, "nprobe": nprobe, "target_rank": target_ranks(ranked, targets).tolist(), **{k: v for k, v in m.items() if k.startswith("hr") or
                                                      k == "ndcg@10"},
            "recall@100": recall_vs_exact(ids[:, :100], exact100), "distance_computations": float(dc.mean()),
            "seconds": secs}


def evaluate_retrieval(cfg: RunConfig, run_path: Path) -> dict:
    """Exact, IVF-PQ and dual-view rows for valid and test; writes ``retrieval/metrics.json`` and ``report.md``."""
    run_path = Path(run_path)
    rc = cfg.retrieval
    model = load_model(run_path, rc)
    qv, iv = (x.numpy() for x in model.item_views())
    out_dir = run_path / "retrieval"
    write_npy(out_dir / "query_view.npy", qv)
    write_npy(out_dir / "item_view.npy", iv)
    split = load_npz(run_path / "data" / "split.npz")
    exact = ExactIndex(iv)
    indexes = [IvfPqIndex(iv, rc.nlist, rc.pq_m, rc.pq_bits, rc.seed), DualViewIndex(qv, iv, rc.nlist, rc.pq_m,
                                                                                      rc.pq_bits, rc.seed)]
    res: dict = {"config": {"swap_weight": rc.swap_weight, "loss": rc.loss, "nlist": rc.nlist, "pq_m": rc.pq_m,
                            "pq_bits": rc.pq_bits}, "n_items": int(iv.shape[0])}
    for part in ("valid", "test"):
        es = eval_set(split, part)
        with torch.no_grad():
            q = model.query(last_items(es.seen, model.hparams["max_len"])).numpy()
        exact100 = exact.search(q, 100)[1]
        rows = [score_index(exact, q, es.seen, es.targets, exact100)]
        rows += [score_index(ix, q, es.seen, es.targets, exact100, p) for ix in indexes for p in rc.nprobes]
        res[part] = rows
    write_json(out_dir / "metrics.json", res)
    write_text(out_dir / "report.md", report_table(res["test"]))
    t = res["test"][0]
    log.info("retrieval (test, exact): HR@10 %.4f HR@50 %.4f HR@100 %.4f NDCG@10 %.4f", t["hr@10"], t["hr@50"],
             t["hr@100"], t["ndcg@10"])
    return res


def report_table(rows: list[dict]) -> str:
    """A markdown table of :func:`score_index` rows."""
    head = "| index | nprobe | HR@10 | HR@50 | HR@100 | NDCG@10 | recall@100 vs exact | distance computations |\n"
    head += "|---|---|---|---|---|---|---|---|\n"
    body = "".join(f"| {r['index']} | {r['nprobe'] if r['index'] != 'exact' else '—'} | {r['hr@10']:.4f} | "
                   f"{r['hr@50']:.4f} | {r['hr@100']:.4f} | {r['ndcg@10']:.4f} | {r['recall@100']:.3f} | "
                   f"{r['distance_computations']:.0f} |\n" for r in rows)
    return head + body
