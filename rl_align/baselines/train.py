"""Train an item-ID baseline on the training split, early-stop on valid, rank test like the SID policy.

Protocol (the policy's): leave-one-out split, training windows cut from each user's training part only
(non-overlapping unless `baseline.window_stride`, re-cut every epoch: :func:`rl_align.policy.data.strided_windows`), full-catalog
ranking with the user's seen items masked, HR/NDCG@K and per-user target ranks from
:mod:`rl_align.eval.evaluate`, predictions exported in the same JSONL format. Artifacts in
``<run>/baselines/<model>/``: ``model.safetensors`` + ``model.json`` (loadable with :func:`load_baseline`,
no pickle), ``metrics.json``, ``predictions_test.jsonl``, ``curve.jsonl``; while training, ``checkpoint/`` (the
state after the last epoch, which a re-run resumes from; removed once the metrics are written).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rl_align.baselines.base import BASELINES, SequenceRecommender
from rl_align.config import BaselineConfig, EvalConfig
from rl_align.data.split import training_pairs
from rl_align.eval.evaluate import (
    EvalSet,
    bucketed,
    eval_set,
    export_predictions,
    metrics,
    target_ranks,
    top_unseen,
)
from rl_align.policy.data import item_window_batches, last_items
from rl_align.utils.io import atomic_dir, atomic_path, load_npz, read_json, write_json

log = logging.getLogger("rl_align")


@torch.no_grad()
def rank_baseline(model: SequenceRecommender, es: EvalSet, k: int, exclude_history: bool = True,
                  batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Full-catalog top-``k``, seen items masked. Returns items (N, k) best first and scores (N, k)."""
    model.eval()
    L = model.hparams["max_len"]
    items, scores = [], []
    for s in range(0, es.targets.size, batch_size):
        seen = es.seen[s: s + batch_size]
        it, sc = top_unseen(model.score_last(last_items(seen, L)), seen if exclude_history else None, k)
        items.append(it.numpy())
        scores.append(sc.numpy())
    return np.concatenate(items), np.concatenate(scores)


def _epoch(model: SequenceRecommender, opt: torch.optim.Optimizer, split: dict, cfg: BaselineConfig, L: int,
           rng: np.random.Generator) -> float:
    """One training epoch: full softmax cross-entropy over the catalog at every position (less each target's earlier
    items with ``cfg.seen_mask``). Returns mean loss."""
    model.train()
    total, n = 0.0, 0
    for inp, tgt, *seen in item_window_batches(split, L, cfg.batch_size, rng, cfg.window_stride, cfg.item_drop,
                                               cfg.seen_mask):
        logits = model.logits(model.encode(inp))
        logits = logits.view(-1, logits.shape[-1])  # (b · L, n_items)
        if seen:
            logits = logits.index_put(seen[0], torch.tensor(float("-inf")))
        loss = F.cross_entropy(logits, tgt.reshape(-1), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, n = total + float(loss.detach()), n + 1
    return total / max(n, 1)


# --------------------------------------------------------------------------- resumable fit
CKPT_STATE, CKPT_META = "state.pt", "state.json"


def fit_fingerprint(name: str, split: dict, n_items: int, cfg: BaselineConfig, max_len: int, validate: bool) -> str:
    """What a :func:`fit` checkpoint was made from: the model, its settings except the schedule's length and the
    threads (a longer ``epochs`` or ``patience`` continues), and the training sequences' bytes."""
    view = {k: v for k, v in asdict(cfg).items() if k not in ("epochs", "patience", "threads")}
    h = hashlib.sha256(json.dumps([name, n_items, max_len, validate, view], sort_keys=True).encode())
    for key in ("seq_items", "seq_offsets"):
        h.update(np.ascontiguousarray(split[key]).tobytes())
    return h.hexdigest()[:16]


def save_fit_state(d: Path, fingerprint: str, model: nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
                   state: dict) -> None:
    """The state after an epoch, atomically: tensors in ``state.pt`` (read back with ``weights_only=True``), the rest
    (epoch, curve, best score, evaluations waited, the numpy generator) in ``state.json``."""
    with atomic_dir(d) as tmp:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                    "best_state": state["best_state"] or {}}, tmp / CKPT_STATE)
        write_json(tmp / CKPT_META, {"fingerprint": fingerprint, "np_rng": rng.bit_generator.state,
                                     **{k: state[k] for k in ("epoch", "curve", "best", "waited")}})


def load_fit_state(d: Path, fingerprint: str, model: nn.Module, opt: torch.optim.Optimizer,
                   rng: np.random.Generator) -> Optional[dict]:
    """Restore ``model``, ``opt``, the torch and numpy generators from ``d`` and return the loop's state, or None
    when there is no checkpoint or it was made from other data or settings (then it is ignored, with a warning)."""
    if not (d / CKPT_META).exists():
        return None
    meta = read_json(d / CKPT_META)
    if meta.get("fingerprint") != fingerprint:
        log.warning("%s: a checkpoint made from other data or settings; training from scratch", d)
        return None
    st = torch.load(d / CKPT_STATE, weights_only=True)
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["opt"])
    torch.set_rng_state(st["torch_rng"])
    rng.bit_generator.state = meta["np_rng"]
    log.info("%s: resuming after epoch %d", d, meta["epoch"])
    return {**{k: meta[k] for k in ("epoch", "curve", "best", "waited")},
            "best_state": st["best_state"] or None}


def fit(name: str, split: dict, n_items: int, cfg: BaselineConfig, max_len: int,
        validate: bool = True, ckpt_dir: Optional[Path] = None) -> tuple[SequenceRecommender, list[dict]]:
    """Train ``name`` with early stopping on valid NDCG@10; returns the best model and the validation curve.

    ``validate=False``: train exactly ``cfg.epochs`` epochs and keep the last weights; the split's valid and test
    events are never read (a refit on every training event, with an epoch count chosen elsewhere).
    ``ckpt_dir``: the state is saved there after every epoch and training resumes from it, to the same weights as
    an uninterrupted fit; the caller removes it once the result is saved."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = BASELINES.get(name)(n_items, max_len, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    valid = eval_set(split, "valid") if validate else None
    st = {"epoch": 0, "curve": [], "best": -1.0, "waited": 0, "best_state": None}
    fp = fit_fingerprint(name, split, n_items, cfg, max_len, validate) if ckpt_dir is not None else ""
    if ckpt_dir is not None:
        st = load_fit_state(Path(ckpt_dir), fp, model, opt, rng) or st
    best, best_state, curve, waited = st["best"], st["best_state"], st["curve"], st["waited"]
    last = st["epoch"] if waited >= cfg.patience else cfg.epochs     # a finished fit resumes to its result
    for epoch in range(st["epoch"] + 1, last + 1):
        t = time.perf_counter()
        loss = _epoch(model, opt, split, cfg, max_len, rng)
        rec = {"epoch": epoch, "train_loss": loss, "train_seconds": time.perf_counter() - t}
        if valid is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            ranked, _ = rank_baseline(model, valid, 10)
            m = metrics(ranked, valid.targets, [10])
            rec.update({"valid_hr@10": m["hr@10"], "valid_ndcg@10": m["ndcg@10"]})
            if m["ndcg@10"] > best:
                best, waited = m["ndcg@10"], 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
            log.info("baseline %s epoch %d: loss %.4f valid HR@10 %.4f NDCG@10 %.4f", name, epoch, loss,
                     m["hr@10"], m["ndcg@10"])
        curve.append(rec)
        if ckpt_dir is not None:
            save_fit_state(Path(ckpt_dir), fp, model, opt, rng, {"epoch": epoch, "curve": curve, "best": best,
                                                                "waited": waited, "best_state": best_state})
        if waited >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), curve


def save_baseline(model: SequenceRecommender, name: str, d: Path) -> None:
    """``model.safetensors`` + ``model.json`` (name and hyper-parameters), atomically."""
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / "model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(d / "model.json", {"model": name, **model.hparams})


def load_baseline(d: str | Path) -> SequenceRecommender:
    """A saved baseline, ready to score (safetensors: no pickle). Errors name the file."""
    d = Path(d)
    spec = read_json(d / "model.json")
    try:
        state = load_file(str(d / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 - a corrupt or missing file: one line naming it
        raise ValueError(f"{d / 'model.safetensors'}: cannot read baseline weights ({e})") from None
    kw = {k: spec[k] for k in ("n_items", "max_len", "hidden", "layers", "heads", "dropout")}
    model = BASELINES.get(spec["model"])(**kw)
    model.load_state_dict(state)
    return model.eval()


def train_and_evaluate(run_path: Path, name: str, cfg: BaselineConfig, eval_cfg: EvalConfig,
                       max_history: int) -> dict:
    """Fit baseline ``name`` on a run's split, evaluate valid and test, export test predictions."""
    run_path = Path(run_path)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    split = load_npz(run_path / "data" / "split.npz")
    item_ids = read_json(run_path / "data" / "items.json")["item_ids"]
    users = read_json(run_path / "data" / "users.json")["user_ids"]
    max_len = cfg.max_len or max_history
    d = run_path / "baselines" / name
    t = time.perf_counter()
    model, curve = fit(name, split, len(item_ids), cfg, max_len, ckpt_dir=d / "checkpoint")
    train_s = time.perf_counter() - t
    save_baseline(model, name, d)
    train_items, _ = training_pairs(split["seq_items"], split["seq_offsets"])
    pop = np.bincount(train_items, minlength=len(item_ids))  # head/tail buckets as the policy's evaluation
    k = max(eval_cfg.ks)
    out: dict = {"model": name, "max_len": max_len, "config": asdict(cfg), "train_seconds": train_s,
                 "epochs": len(curve), "best_epoch": max((r for r in curve if "valid_ndcg@10" in r),
                                                          key=lambda r: r["valid_ndcg@10"])["epoch"]}
    for part in ("valid", "test"):
        es = eval_set(split, part)
        ranked, _ = rank_baseline(model, es, k, eval_cfg.exclude_history)
        out[part] = {"n_users": int(es.targets.size), "policy": metrics(ranked, es.targets, eval_cfg.ks),
                     "policy_buckets": bucketed(ranked, es.targets, pop, eval_cfg.ks, eval_cfg.head_share),
                     "target_rank": target_ranks(ranked, es.targets).tolist(),
                     "list_lengths": np.bincount((ranked >= 0).sum(1), minlength=k + 1).tolist()}
        if part == "test":
            export_predictions(d / "predictions_test.jsonl", ranked, es.users, users, item_ids, k=k)
            out[part]["export"] = str(d / "predictions_test.jsonl")
    with atomic_path(d / "curve.jsonl") as tmp:
        Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in curve))
    write_json(d / "metrics.json", out)
    shutil.rmtree(d / "checkpoint", ignore_errors=True)
    log.info("baseline %s: test HR@10 %.4f NDCG@10 %.4f (best epoch %d, %.0f s)", name,
             out["test"]["policy"]["hr@10"], out["test"]["policy"]["ndcg@10"], out["best_epoch"], train_s)
    return out
