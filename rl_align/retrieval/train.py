"""Train the SCI dual tower on Ray Train and evaluate it with exact search and both IVF indexes.

Training: windows of ``max_len + 1`` items cut from each user's training part (re-cut every epoch); every position
is a query (the items up to it) whose positive is the next item, and the batch's positives are the candidates. Validation: exact search over the whole catalog (seen items masked), HR@50 for early stopping.
Artifacts in ``<run>/retrieval/``: ``model.safetensors`` + ``model.json``, ``query_view.npy`` / ``item_view.npy``
(both views of every item, catalog order: ``embed.source: npy`` takes ``item_view.npy`` for SIDs from SCI),
``metrics.json`` and ``curve.jsonl``; Ray Train checkpoints (model, optimizer, RNG, epoch) in ``ray_train/``, so a
killed run continues from its last epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rl_align.config import RetrievalConfig, RunConfig, from_dict
from rl_align.data.split import training_pairs
from rl_align.eval.evaluate import EvalSet, eval_set, metrics, top_unseen
from rl_align.policy.data import item_window_batches, last_items
from rl_align.ray_utils import RAY_RUN_NAME, STATE, init_ray, resume_checkpoint
from rl_align.retrieval.losses import symmetric_loss
from rl_align.retrieval.towers import DualTower
from rl_align.utils.io import atomic_path, load_npz, read_json, write_json

log = logging.getLogger("rl_align")
KS = (10, 50, 100)


def item_log_q(split: dict, n_items: int) -> torch.Tensor:
    """(n_items,) log share of each item among training next-item targets (add-one smoothed): logQ correction."""
    items, _ = training_pairs(split["seq_items"], split["seq_offsets"])
    return torch.from_numpy(np.log(np.bincount(items, minlength=n_items) + 1.0) - np.log(items.size + n_items)).float()


@torch.no_grad()
def search_exact(model: DualTower, es: EvalSet, k: int, batch: int = 1024) -> np.ndarray:
    """(N, k) item indices by cosine over the whole catalog, each user's seen items masked."""
    model.eval()
    L = model.hparams["max_len"]
    _, iv = model.item_views()
    out = []
    for s in range(0, es.targets.size, batch):
        seen = es.seen[s: s + batch]
        out.append(top_unseen(model.query(last_items(seen, L)) @ iv.T, seen, k)[0].numpy())
    return np.concatenate(out)


def _checkpoint(model, opt, state: dict, record: dict) -> None:
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / STATE).write_text(json.dumps({**state, "torch_rng": torch.get_rng_state().tolist()}))
        ray.train.report({k: v for k, v in record.items() if isinstance(v, (int, float))},
                         checkpoint=Checkpoint.from_directory(str(tmp)))


def _restore(model, opt, out_dir: Path) -> dict | None:
    import ray.train

    ckpt = resume_checkpoint(ray.train.get_checkpoint(), out_dir)
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        d = Path(d)
        state = json.loads((d / STATE).read_text())
        torch.set_rng_state(torch.tensor(state.pop("torch_rng"), dtype=torch.uint8))
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        opt.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
    return state


def build_model(cfg: RetrievalConfig, run_path: Path, n_items: int, max_len: int) -> DualTower:
    content = None
    if cfg.content:
        content = torch.from_numpy(np.load(run_path / "embed" / "item_emb.npy", allow_pickle=False))
    return DualTower(n_items, max_len, cfg.hidden, cfg.dim, content, cfg.dropout)


def worker_loop(config: dict) -> None:
    """The Ray Train worker: train with early stopping on valid HR@50, checkpoint every epoch, save the best."""
    cfg = from_dict(RetrievalConfig, config["retrieval"])
    run_path, L = Path(config["run_dir"]), int(config["max_len"])
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    split = load_npz(run_path / "data" / "split.npz")
    n_items = len(read_json(run_path / "data" / "items.json")["item_ids"])
    log_q = item_log_q(split, n_items)
    model = build_model(cfg, run_path, n_items, L)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = run_path / "retrieval"
    state = _restore(model, opt, out) or {"epoch": 0, "step": 0, "best": -1.0, "best_epoch": 0, "waited": 0}
    valid = eval_set(split, "valid")
    while state["epoch"] < cfg.epochs and state["waited"] < cfg.patience:
        state["epoch"] += 1
        rng = np.random.default_rng(cfg.seed * 1000 + state["epoch"])
        model.train()
        t, total, n, pairs = time.perf_counter(), 0.0, 0, 0
        for inp, tgt in item_window_batches(split, L, cfg.batch_size, rng):
            loss, _ = symmetric_loss(model, inp, tgt, log_q, cfg.loss, cfg.swap_weight, cfg.margin, cfg.temperature)
            pairs += int((tgt >= 0).sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n, state["step"] = total + float(loss.detach()), n + 1, state["step"] + 1
        rec = {"epoch": state["epoch"], "train_loss": total / n, "pairs_per_s": pairs / (time.perf_counter() - t)}
        if state["epoch"] % cfg.eval_every == 0 or state["epoch"] == cfg.epochs:
            m = metrics(search_exact(model, valid, 50), valid.targets, [10, 50])
            rec.update({f"valid_{k}": v for k, v in m.items()})
            if m["hr@50"] > state["best"]:
                state.update(best=m["hr@50"], best_epoch=state["epoch"], waited=0)
                save_model(model, out)
            else:
                state["waited"] += 1
            log.info("retrieval epoch %d: loss %.4f valid HR@10 %.4f HR@50 %.4f", state["epoch"], rec["train_loss"],
                     m["hr@10"], m["hr@50"])
        with open(out / "curve.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        _checkpoint(model, opt, state, rec)


def save_model(model: DualTower, d: Path) -> None:
    """``model.safetensors`` + ``model.json`` (hyper-parameters), atomically."""
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(d / "model.json", model.hparams)


def load_model(run_path: Path, cfg: RetrievalConfig) -> DualTower:
    """The best dual tower of a run (safetensors: no pickle); errors name the file."""
    d = Path(run_path) / "retrieval"
    hp = read_json(d / "model.json")
    model = build_model(dataclasses.replace(cfg, hidden=hp["hidden"], dim=hp["dim"]), Path(run_path),
                        hp["n_items"], hp["max_len"])
    try:
        state = load_file(str(d / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 - a corrupt file: one line naming it
        raise ValueError(f"{d / 'model.safetensors'}: cannot read the dual tower ({e})") from None
    model.load_state_dict(state)
    return model.eval()


def train_retrieval(cfg: RunConfig, run_path: Path) -> dict:
    """Run :func:`worker_loop` as a Ray Train ``TorchTrainer`` (one worker, resumable); returns its last metrics."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    init_ray()
    run_path = Path(run_path).resolve()
    out = run_path / "retrieval"
    out.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"run_dir": str(run_path), "retrieval": dataclasses.asdict(cfg.retrieval),
                           "max_len": cfg.retrieval.max_len or cfg.data.max_history},
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": cfg.retrieval.cpus_per_worker}),
        run_config=ray.train.RunConfig(name=RAY_RUN_NAME, storage_path=str(out),
                                       failure_config=FailureConfig(max_failures=2),
                                       checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    return dict(result.metrics or {})
