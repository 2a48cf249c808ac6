"""Train the ranker with BCE on exposure logs, as a Ray Train ``TorchTrainer`` (DDP over gloo/nccl), resumable.

Inputs (written by the driver into ``<run>/ranker/inputs/``): the feature specs
and tables, and the exposure log. Each training example is one impression — a
(user, history) context with its M shown items and their click labels — so the
ranker scores a whole slate in one forward pass. After every epoch the held-out
impressions are scored (AUC / GAUC), a checkpoint (weights + optimizer + RNG +
epoch) is reported to Ray Train, and the best model by held-out AUC is saved to
``<run>/ranker/model`` with :func:`rl_align.ranker.model.save_ranker`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ray.train import Checkpoint
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from rl_align.config import RankerConfig, RunConfig, from_dict, to_dict
from rl_align.data import load_dataset
from rl_align.data.features import FeatureSpec, encode, specs_from_config
from rl_align.ranker.metrics import auc, gauc
from rl_align.ranker.model import DinRanker, items_digest, save_ranker
from rl_align.ray_utils import RAY_RUN_NAME, STATE, init_ray, latest_checkpoint, resume_checkpoint
from rl_align.run_dir import resume_view
from rl_align.tracking import Tracker
from rl_align.utils.io import load_npz, read_json, write_json, write_npz

log = logging.getLogger("rl_align")


def recent_history(history: np.ndarray, H: int) -> np.ndarray:
    """(E, H0) left-aligned histories padded with -1 → (E, H) of the H most recent items, left-aligned."""
    lens = (history >= 0).sum(1)
    start = np.maximum(lens - H, 0)
    cols = np.arange(H)
    idx = start[:, None] + cols[None, :]
    ok = idx < lens[:, None]
    out = np.where(ok, np.take_along_axis(history, np.minimum(idx, history.shape[1] - 1), 1), -1)
    return out.astype(np.int64)


def score_slates(model: DinRanker, users: np.ndarray, history: np.ndarray, shown: np.ndarray,
                 batch: int = 1024, device="cpu") -> np.ndarray:
    """(E, M) click probabilities of every shown slot (no grad, eval mode)."""
    was = model.training
    model.eval()
    out = np.empty(shown.shape, np.float32)
    with torch.no_grad():
        for s in range(0, users.size, batch):
            sl = slice(s, s + batch)
            logit = model(torch.from_numpy(users[sl]).to(device), torch.from_numpy(history[sl]).to(device),
                          torch.from_numpy(shown[sl]).to(device))
            out[sl] = torch.sigmoid(logit).float().cpu().numpy()
    model.train(was)
    return out


def heldout_metrics(model: DinRanker, log_arrays: dict, H: int, device="cpu") -> dict:
    """AUC, GAUC (by user) and log-loss on the held-out impressions."""
    m = log_arrays["heldout"]
    users, shown, clicks = log_arrays["users"][m], log_arrays["shown"][m], log_arrays["clicks"][m]
    hist = recent_history(log_arrays["history"][m], H)
    p = score_slates(model, users, hist, shown, device=device)
    valid = shown >= 0
    s, y = p[valid], clicks[valid]
    g = np.broadcast_to(users[:, None], shown.shape)[valid]
    ga, n_groups = gauc(s, y, g)
    eps = 1e-7
    ll = float(-np.mean(y * np.log(s + eps) + (1 - y) * np.log(1 - s + eps))) if s.size else float("nan")
    return {"heldout_auc": auc(s, y), "heldout_gauc": ga, "heldout_gauc_users": n_groups,
            "heldout_logloss": ll, "heldout_clicks": int(y.sum()), "heldout_slots": int(y.size)}


def _build_model(inputs: Path, cfg: RankerConfig) -> DinRanker:
    meta = read_json(inputs / "features.json")
    tables = load_npz(inputs / "tables.npz")
    ispecs = [FeatureSpec(**s) for s in meta["item_specs"]]
    uspecs = [FeatureSpec(**s) for s in meta["user_specs"]]
    it = {s.name: torch.from_numpy(tables[f"item.{s.name}"]) for s in ispecs}
    ut = {s.name: torch.from_numpy(tables[f"user.{s.name}"]) for s in uspecs}
    return DinRanker(meta["n_items"], meta["n_users"], cfg, ispecs, uspecs, it, ut)


def _arch_digest(cfg: RankerConfig) -> str:
    """What a checkpoint must share with the current config to be resumed (not the schedule or the resources)."""
    keep = resume_view(cfg)
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


class RankerWorker:
    """One Ray Train worker of ranker training: :meth:`_restore` the latest checkpoint of the same model and data
    setup, then per epoch :meth:`_train_epoch` (DDP, this rank's share of every batch), held-out metrics, the best
    model kept, and :meth:`_report` (checkpoint to Ray Train)."""

    def __init__(self, config: dict) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.config = config
        self.cfg = cfg = from_dict(RankerConfig, config["ranker"], source="ranker")
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
        self.out_dir = Path(config["run_dir"]) / "ranker"
        inputs = self.out_dir / "inputs"
        (self.out_dir / "pids").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "pids" / f"rank{self.rank}.pid").write_text(str(os.getpid()))
        self.device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
        self.log = la = load_npz(inputs / "exposure.npz")
        train = ~la["heldout"]
        self.users, self.shown, self.clicks = la["users"][train], la["shown"][train], la["clicks"][train]
        self.hist = recent_history(la["history"][train], cfg.max_history)
        torch.manual_seed(cfg.seed)
        self.model = _build_model(inputs, cfg).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ddp = ray.train.torch.prepare_model(self.model) if self.world > 1 else self.model
        self.arch = _arch_digest(cfg)
        self.state = {"epoch": 0, "step": 0, "best_auc": -1.0, "best_epoch": -1, "arch": self.arch}

    def _restore(self) -> None:
        ckpt = resume_checkpoint(ray.train.get_checkpoint(), self.out_dir)
        if ckpt is None:
            return
        with ckpt.as_directory() as d:
            d = Path(d)
            state = json.loads((d / STATE).read_text())
            if state.get("arch") != self.arch:
                if self.rank == 0:
                    print("[ranker] checkpoint is for another model/data setup: starting fresh", flush=True)
                return
            torch.set_rng_state(torch.tensor(state.pop("torch_rng"), dtype=torch.uint8))
            self.model.load_state_dict(load_file(str(d / "model.safetensors")))
            self.opt.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
            self.state = state
        if self.rank == 0:
            print(f"[ranker] resumed from checkpoint at epoch {self.state['epoch']}", flush=True)

    def _train_epoch(self, epoch: int) -> dict:
        """BCE over the clicks of the shown slates (padding masked); returns the epoch's record."""
        cfg, dev = self.cfg, self.device
        self.model.train()
        perm = np.random.default_rng(cfg.seed + epoch).permutation(self.users.size)
        n_batches = self.users.size // cfg.batch_size
        per_rank = cfg.batch_size // self.world
        t0 = time.perf_counter()
        tot = torch.zeros(2, dtype=torch.float64)
        it = tqdm(range(n_batches), desc=f"ranker epoch {epoch + 1}/{cfg.epochs}", leave=False, mininterval=2.0) \
            if self.rank == 0 else range(n_batches)
        for b in it:
            rows = perm[b * cfg.batch_size + self.rank * per_rank: b * cfg.batch_size + (self.rank + 1) * per_rank]
            s = torch.from_numpy(self.shown[rows]).to(dev)
            y = torch.from_numpy(self.clicks[rows]).to(dev).float()
            valid = (s >= 0).float()
            logit = self.ddp(torch.from_numpy(self.users[rows]).to(dev), torch.from_numpy(self.hist[rows]).to(dev), s)
            loss = (F.binary_cross_entropy_with_logits(logit, y, reduction="none") * valid).sum() \
                / valid.sum().clamp(min=1)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.state["step"] += 1
            tot += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(tot)
        secs = time.perf_counter() - t0
        return {"epoch": epoch + 1, "step": self.state["step"], "train_loss": (tot[0] / tot[1].clamp(min=1)).item(),
                "train_seconds": secs, "impressions_per_s": n_batches * cfg.batch_size / max(secs, 1e-9)}

    def _keep_best(self, epoch: int, record: dict) -> None:
        state = self.state
        if record["heldout_auc"] > state["best_auc"]:
            state.update(best_auc=record["heldout_auc"], best_epoch=epoch + 1)
            if self.rank == 0:
                save_ranker(self.model, self.out_dir / "model",
                            {"item_ids_digest": self.config["item_ids_digest"], "epoch": epoch + 1,
                             **{k: v for k, v in record.items() if k.startswith("heldout")}})
        record.update(best_epoch=state["best_epoch"], best_heldout_auc=state["best_auc"])

    def _report(self, record: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if self.rank == 0:
                save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
                          str(tmp / "model.safetensors"))
                torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
                (tmp / STATE).write_text(json.dumps({**self.state, "torch_rng": torch.get_rng_state().tolist()}))
            if self.world > 1:
                dist.barrier()
            ray.train.report({k: v for k, v in record.items() if isinstance(v, (int, float))},
                             checkpoint=Checkpoint.from_directory(str(tmp)) if self.rank == 0 else None)

    def run(self) -> None:
        self._restore()
        tracker = None
        if self.rank == 0:
            tracker = Tracker(self.out_dir, name=f"{Path(self.config['run_dir']).name}-ranker",
                              config=self.config.get("wandb_config"), use_wandb=self.config.get("wandb", True))
        for epoch in range(self.state["epoch"], self.cfg.epochs):
            record = self._train_epoch(epoch)
            record.update(heldout_metrics(self.model, self.log, self.cfg.max_history, self.device))
            self.state["epoch"] = epoch + 1
            self._keep_best(epoch, record)
            self._report(record)
            if tracker is not None:
                tracker.log(record, step=self.state["step"])
                print("[ranker] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in record.items()), flush=True)
        if tracker is not None:
            tracker.log({"event": "done", **self.state})
            tracker.finish()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point on every worker."""
    RankerWorker(config).run()


def prepare_inputs(cfg: RunConfig, run_path: Path) -> dict:
    """Feature specs + tables and the exposure log → ``<run>/ranker/inputs`` (what every worker reads)."""

    run_path = Path(run_path)
    items = read_json(run_path / "data" / "items.json")
    users = read_json(run_path / "data" / "users.json")
    data = load_dataset(cfg.data)
    if list(data.item_ids) != list(items["item_ids"]):
        raise ValueError(f"{run_path / 'data' / 'items.json'}: item ids differ from the dataset's; re-run the data stage")
    ispecs = specs_from_config(data.item_features, cfg.ranker.item_features, data.n_items, "item")
    uspecs = specs_from_config(users.get("user_features") or {}, cfg.ranker.user_features, len(users["user_ids"]),
                               "user")
    tables = {f"item.{s.name}": encode(s, data.item_features[s.name]) for s in ispecs}
    tables.update({f"user.{s.name}": encode(s, users["user_features"][s.name]) for s in uspecs})
    d = run_path / "ranker" / "inputs"
    d.mkdir(parents=True, exist_ok=True)
    write_npz(d / "tables.npz", **tables)
    write_json(d / "features.json", {"n_items": data.n_items, "n_users": len(users["user_ids"]),
                                     "item_specs": [s.to_json() for s in ispecs],
                                     "user_specs": [s.to_json() for s in uspecs]})
    src = run_path / "exposure" / "log.npz"
    if not src.exists():
        raise FileNotFoundError(f"{src}: no exposure log; run the 'exposure' stage first")
    write_npz(d / "exposure.npz", **load_npz(src))
    return {"item_features": [f"{s.name}:{s.kind}" for s in ispecs], "user_features": [f"{s.name}:{s.kind}" for s in uspecs]}


def run_ranker_training(cfg: RunConfig, run_path: Path) -> dict:
    """Train on Ray Train; resumes from ``<run>/ranker/ray_train`` if a previous attempt left checkpoints."""
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    r = cfg.ranker
    run_path = Path(run_path).resolve()
    feats = prepare_inputs(cfg, run_path)
    init_ray()
    storage = run_path / "ranker"
    if latest_checkpoint(storage) is not None:
        log.info("ranker: resuming from %s", latest_checkpoint(storage))
    items = read_json(run_path / "data" / "items.json")["item_ids"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run_dir": str(run_path), "ranker": dataclasses.asdict(r), "wandb": cfg.wandb,
                           "wandb_config": to_dict(cfg), "item_ids_digest": items_digest(items)},
        torch_config=TorchConfig(backend="nccl" if r.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                                     resources_per_worker={"CPU": r.cpus_per_worker}),
        run_config=ray.train.RunConfig(name=RAY_RUN_NAME, storage_path=str(storage),
                                       failure_config=FailureConfig(max_failures=r.max_failures),
                                       checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    model_dir = storage / "model"
    if not model_dir.exists():
        raise RuntimeError(f"ranker training finished without a model in {model_dir}")
    return {"model": str(model_dir), **feats, **{k: v for k, v in (result.metrics or {}).items()
                                                   if isinstance(v, (int, float))}}
