"""Build an index over a run's dual-tower vectors and answer top-K queries for users (``rl-align retrieval``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rl_align.config import RunConfig, load_config
from rl_align.data.split import items_before
from rl_align.policy.data import last_items
from rl_align.retrieval.evaluate import drop_seen
from rl_align.retrieval.index import DualViewIndex, ExactIndex, IvfPqIndex, load_index
from rl_align.retrieval.train import load_model
from rl_align.utils.io import load_npz, read_json


def _run_config(run: Path) -> RunConfig:
    if not (run / "retrieval" / "item_view.npy").exists():
        raise FileNotFoundError(f"{run}: no trained dual tower (retrieval/item_view.npy); run `rl-align retrieval "
                                f"train` first")
    return load_config(run / "config.yaml", RunConfig)


def build_index(run_dir: str | Path, kind: str, nlist: int | None = None, pq_m: int | None = None) -> Path:
    """Build ``kind`` (dual_view | ivfpq) from ``retrieval/{query,item}_view.npy``; writes ``retrieval/index_<kind>/``."""
    run = Path(run_dir)
    rc = _run_config(run).retrieval
    iv = np.load(run / "retrieval" / "item_view.npy", allow_pickle=False)
    nlist, m = nlist or rc.nlist, pq_m or rc.pq_m
    if kind == "dual_view":
        qv = np.load(run / "retrieval" / "query_view.npy", allow_pickle=False)
        index = DualViewIndex(qv, iv, nlist, m, rc.pq_bits, rc.seed)
    elif kind == "ivfpq":
        index = IvfPqIndex(iv, nlist, m, rc.pq_bits, rc.seed)
    else:
        raise ValueError(f"index kind must be 'dual_view' or 'ivfpq', got {kind!r}")
    out = run / "retrieval" / f"index_{kind}"
    index.save(out)
    return out


def search_users(run_dir: str | Path, users: list[str], index: str = "exact", k: int = 10,
                 nprobe: int = 4) -> list[dict]:
    """Top-``k`` unseen items after each user's whole history (train + valid + test events) as raw ids."""
    run = Path(run_dir)
    cfg = _run_config(run)
    model = load_model(run, cfg.retrieval)
    split = load_npz(run / "data" / "split.npz")
    user_ids = read_json(run / "data" / "users.json")["user_ids"]
    item_ids = read_json(run / "data" / "items.json")["item_ids"]
    pos = {u: i for i, u in enumerate(user_ids)}
    missing = [u for u in users if u not in pos]
    if missing:
        raise KeyError(f"user {missing[0]!r} is not in the run's data ({len(user_ids)} users)")
    rows = np.array([pos[u] for u in users], np.int64)
    seen = items_before(split["seq_items"], split["seq_offsets"], rows, np.diff(split["seq_offsets"])[rows])
    with torch.no_grad():
        q = model.query(last_items(seen, model.hparams["max_len"])).numpy()
    if index == "exact":
        ix = ExactIndex(np.load(run / "retrieval" / "item_view.npy", allow_pickle=False))
    else:
        d = run / "retrieval" / f"index_{index}"
        if not (d / "index.json").exists():
            raise FileNotFoundError(f"{d}: no {index} index; run `rl-align retrieval build-index {run} --kind {index}`")
        ix = load_index(d)
    scores, ids, _ = ix.search(q, min(ix.ntotal, k + int((seen >= 0).sum(1).max())), nprobe)
    top = drop_seen(ids, seen, k)
    out = []
    for r, u in enumerate(users):
        sc = {int(i): float(s) for i, s in zip(ids[r], scores[r]) if i >= 0}
        out.append({"user": u, "items": [item_ids[i] for i in top[r] if i >= 0],
                    "scores": [round(sc[i], 6) for i in top[r] if i >= 0]})
    return out
