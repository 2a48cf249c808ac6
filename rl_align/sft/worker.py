"""The Ray Train worker loop of SFT: one process per worker, DeepSpeed engine (or DDP) inside.

Every worker builds the same model (same seed), reads the run dir's catalog and
split, takes its slice of each global batch, and joins the gradient all-reduce.
Validation is sharded over workers and all-reduced, so every worker takes the
same early-stopping decision. A checkpoint (engine + optimizer + scheduler +
epoch/step + best metric) is reported to Ray Train after every epoch; on a
restart — Ray's after a worker died, or a re-run of the command — training
continues from the latest one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import Checkpoint
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from rl_align.config import EvalConfig, PolicyConfig, SftConfig, from_dict
from rl_align.data.split import train_popularity
from rl_align.eval.evaluate import eval_set, metrics, rank_with_engine
from rl_align.eval.hybrid import hybrid_rankings, valid_record
from rl_align.policy.data import events_to_items, events_to_users, windows_to_batch
from rl_align.policy.history_input import NEEDS_VECTORS, attach_history_codes, history_codes_of
from rl_align.policy.item_head import (
    attach_item_head,
    future_targets,
    item_head_of,
    seen_before,
    target_items,
)
from rl_align.policy.model import (
    add_embedding_dropout,
    add_hidden_dropout,
    attention_mask_for,
    build_policy,
    init_item_token_embeddings,
    save_policy,
)
from rl_align.ray_utils import STATE, resume_checkpoint
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sft.distill import distill_loss, head_distill_loss, head_soft_targets, soft_token_targets
from rl_align.sft.ema import WeightEma
from rl_align.sft.loss import sft_loss
from rl_align.sft.schedule import epoch_events, shard_rows, warmup_cosine
from rl_align.sid.catalog import SidCatalog
from rl_align.tracking import Tracker
from rl_align.utils.io import load_npz

EMA_FILE = "ema.safetensors"


def _validate(module, catalog, split, ecfg: EvalConfig, limit, rank: int, world: int, device) -> dict:
    """Sharded constrained-beam validation; returns all-reduced HR@10 / NDCG@10 over the valid users.

    With an item head the figures are the hybrid ranking's at the β with the best valid NDCG@10 (``item_head_beta``;
    what the eval stage will choose), and the beam's own are ``valid_beam_hr@10`` / ``valid_beam_ndcg@10``."""
    es = eval_set(split, "valid", limit)
    sel = np.arange(rank, es.targets.size, world)
    sub = type(es)(es.users[sel], es.targets[sel], es.history[sel], es.seen[sel])
    was_training = module.training
    engine = TorchEngine(module, catalog, device)
    ranked, scores = rank_with_engine(engine, catalog, sub, max(10, ecfg.beams), ecfg.exclude_history,
                                      ecfg.batch_size)
    rows = {"beam": ranked}
    head = item_head_of(module)
    if head is not None:
        fused, _ = hybrid_rankings(module, head, catalog, sub, ranked, scores, ecfg.item_head_union,
                                   ecfg.item_head_betas, ecfg.exclude_history, ecfg.batch_size)
        rows.update(fused)
    module.train(was_training)
    sums = torch.tensor([[m["hr@10"] * sel.size, m["ndcg@10"] * sel.size, float(sel.size)]
                         for m in (metrics(r, sub.targets, [10]) for r in rows.values())], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(sums)
    mean = {k: (row[0].item() / max(row[2].item(), 1.0), row[1].item() / max(row[2].item(), 1.0))
            for k, row in zip(rows, sums)}
    if head is None:
        return {"valid_hr@10": mean["beam"][0], "valid_ndcg@10": mean["beam"][1]}
    return valid_record(mean["beam"], {b: mean[b] for b in ecfg.item_head_betas})


class SftWorker:
    """One Ray Train worker's SFT: built from the trainer's config dict, then :meth:`run` to the end.

    The steps (same order as an uninterrupted run, so a resumed one repeats it): :meth:`_build` the policy,
    optimizer and engine; :meth:`_restore` the latest checkpoint; per epoch :meth:`_train_epoch`,
    :meth:`_evaluate` (keeps the best policy) and :meth:`_report` (checkpoint to Ray Train).
    """

    def __init__(self, config: dict) -> None:
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.config = config
        self.sft = from_dict(SftConfig, config["sft"], source="sft")
        self.pcfg = from_dict(PolicyConfig, config["policy"], source="policy")
        self.ecfg = from_dict(EvalConfig, config["eval"], source="eval")
        torch.set_num_threads(max(1, int(self.sft.cpus_per_worker)))
        self.run_dir = Path(config["run_dir"])
        self.out_dir = self.run_dir / "sft"
        (self.out_dir / "pids").mkdir(parents=True, exist_ok=True)
        (self.out_dir / "pids" / f"rank{self.rank}.pid").write_text(str(os.getpid()))
        self.catalog = SidCatalog.load(self.run_dir / "sids" / "catalog")
        self.split = load_npz(self.run_dir / "data" / "split.npz")
        self.device = ray.train.torch.get_device() if self.sft.use_gpu else torch.device("cpu")
        self.window = self.sft.window_items or config["max_history"] + 1
        self.state = {"epoch": 0, "step": 0, "best_ndcg": -1.0, "best_epoch": -1, "bad_evals": 0}
        self.teacher = load_npz(config["distill_targets"]) if config.get("distill_targets") else None
        self._build()

    def _build(self) -> None:
        """Policy (seeded), AdamW, warm-up + cosine schedule, and the DeepSpeed (or DDP) engine around them."""
        sft = self.sft
        model = build_policy(self.pcfg, self.catalog, self.config["max_history"], seed=sft.seed).to(self.device)
        vectors = (np.load(self.run_dir / "embed" / "item_emb.npy", allow_pickle=False)
                   if self.pcfg.history_input in NEEDS_VECTORS else None)  # the vectors the run's SIDs quantise
        counts = train_popularity(self.split, self.catalog.n_items) if self.pcfg.history_gate == "popularity" else None
        attach_history_codes(model, self.catalog, self.pcfg.history_input, vectors,  # before dropout: it covers it
                             self.pcfg.history_gate, counts, self.pcfg.history_id_dropout)
        add_embedding_dropout(model, self.pcfg.embedding_dropout)
        add_hidden_dropout(model, self.pcfg.hidden_dropout)
        if self.config.get("item_token_init"):
            vec = torch.from_numpy(np.load(self.config["item_token_init"], allow_pickle=False))
            info = init_item_token_embeddings(model, self.catalog, vec, seed=sft.seed)
            if self.rank == 0:
                print(f"[sft] item-token embeddings from {self.config['item_token_init']}: {info}", flush=True)
        attach_item_head(model, self.catalog, self.pcfg.item_head)  # after the policy's seeded init
        opt = torch.optim.AdamW(model.parameters(), lr=sft.lr, weight_decay=sft.weight_decay, betas=(0.9, 0.98))
        n_windows = epoch_events(self.split, self.window, sft.seed, 0, sft.window_stride)[0].shape[0]
        sched = warmup_cosine(opt, sft.warmup_steps, sft.epochs * max(1, n_windows // sft.batch_size))
        self.use_ds = sft.backend == "deepspeed"
        if self.use_ds:
            import deepspeed  # only the deepspeed backend needs it (and its import is slow)

            ds_config = {
                "train_batch_size": sft.batch_size,
                "train_micro_batch_size_per_gpu": sft.batch_size // self.world,
                "gradient_accumulation_steps": 1,
                "gradient_clipping": sft.grad_clip,
                "zero_optimization": {"stage": sft.zero_stage},
                "bf16": {"enabled": sft.bf16},
                "steps_per_print": 10**9,
            }
            self.engine, opt, _, sched = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                                              config=ds_config, dist_init_required=False)
            self.module = self.engine.module
        else:
            self.engine = ray.train.torch.prepare_model(model)
            self.module = self.engine.module if hasattr(self.engine, "module") else self.engine
        self.opt, self.sched = opt, sched
        self.ema = WeightEma(self.module, sft.ema_decay) if sft.ema_decay > 0 else None

    def _averaged(self):
        """Validate and save the weight average when ``sft.ema_decay`` is on, else the weights as trained."""
        return self.ema.applied(self.module) if self.ema is not None else nullcontext(self.module)

    def _restore(self) -> bool:
        """Load the latest checkpoint (Ray's after a restart, or a previous attempt's); True if there was one."""
        ckpt = resume_checkpoint(ray.train.get_checkpoint(), self.out_dir)
        if ckpt is None:
            return False
        with ckpt.as_directory() as d:
            d = Path(d)
            self.state = json.loads((d / STATE).read_text())
            rng = self.state.pop("torch_rng", None)
            if rng is not None:  # dropout continues exactly as in an uninterrupted run
                torch.set_rng_state(torch.tensor(rng, dtype=torch.uint8))
            if self.use_ds:
                self.engine.load_checkpoint(str(d), tag="ckpt", load_optimizer_states=True,
                                            load_lr_scheduler_states=True)
            else:
                self.module.load_state_dict(load_file(str(d / "model.safetensors")), strict=False)
                self.opt.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
                self.sched.load_state_dict(torch.load(d / "scheduler.pt", weights_only=True))
            if self.ema is not None:
                if not (d / EMA_FILE).exists():
                    raise ValueError(f"sft.ema_decay is {self.sft.ema_decay} but the checkpoint being resumed ({d}) "
                                     f"has no {EMA_FILE}: it was trained without it; resume with sft.ema_decay=0")
                self.ema.load_state_dict(load_file(str(d / EMA_FILE)))
        if self.rank == 0:
            print(f"[sft] resumed from checkpoint at epoch {self.state['epoch']} (step {self.state['step']})",
                  flush=True)
        return True

    def _train_epoch(self, epoch: int) -> dict:
        """One pass over this worker's share of the epoch's windows; returns the epoch's record (loss all-reduced)."""
        sft = self.sft
        self.module.train()
        events, n_target = epoch_events(self.split, self.window, sft.seed, epoch, sft.window_stride, sft.item_drop)
        batches = shard_rows(events.shape[0], sft.batch_size, self.rank, self.world)
        t0 = time.perf_counter()
        tot = torch.zeros(2, dtype=torch.float64)
        it = tqdm(batches, desc=f"sft epoch {epoch + 1}/{sft.epochs}", leave=False, mininterval=2.0) \
            if self.rank == 0 else batches
        for rows in it:
            loss = self._loss(events[rows], n_target[rows])
            if self.use_ds:
                self.engine.backward(loss)
                self.engine.step()
            else:
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if sft.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.module.parameters(), sft.grad_clip)
                self.opt.step()
                self.sched.step()
            if self.ema is not None:
                self.ema.update(self.module)
            self.state["step"] += 1
            tot += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(tot)
        secs = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "step": self.state["step"], "train_loss": (tot[0] / max(tot[1], 1)).item(),
                  "lr": self.sched.get_last_lr()[0], "train_seconds": secs,
                  "windows_per_s": len(batches) * sft.batch_size / max(secs, 1e-9)}
        hc = history_codes_of(self.module)
        if hc is not None:  # how much item content the history tokens have taken (policy.history_input)
            record.update(hc.gate_abs())
        return record

    def _loss(self, events: np.ndarray, n_target: np.ndarray) -> torch.Tensor:
        """The batch's loss: NLL of its target tokens, plus ``item_head_weight`` × the item head's cross-entropy when
        ``policy.item_head`` is on, plus the distillation terms (:meth:`_distill_terms`). events: (b, W) event
        indices; n_target: (b,)."""
        items = events_to_items(events, self.split["seq_items"])
        batch = windows_to_batch(items, self.catalog, n_target, events_to_users(events, self.split["seq_offsets"]))
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if "targets" in batch:  # sid.history: items, packed targets with a custom mask (policy/data.py)
            batch["attention_mask"] = attention_mask_for(self.module, batch["attention_mask"])
        head, targets = item_head_of(self.module), None
        if head is not None:
            targets = target_items(items, n_target) if self.sft.item_head_future == 1 else future_targets(
                events, n_target, self.split["seq_items"], self.split["seq_offsets"], self.sft.item_head_future)
        seen = None
        if head is not None and self.sft.item_head_seen_mask:
            seen = seen_before(events, n_target, self.split["seq_items"], self.split["seq_offsets"], targets)
        extra, head_extra = self._distill_terms(events, n_target)
        return sft_loss(self.engine, batch, self.catalog, head, targets, self.sft.item_head_weight,
                        self.sft.label_smoothing, extra, head_extra, seen)

    def _distill_terms(self, events: np.ndarray, n_target: np.ndarray) -> tuple[Optional[Callable], Optional[Callable]]:
        """``distill_weight`` × the soft cross-entropy to the teacher's targets, as :func:`sft_loss`'s ``extra`` (on
        the SID tokens' logits) and ``head_extra`` (on the item head's log-probs), as ``sft.distill_into`` asks;
        (None, None) without a teacher."""
        extra = head_extra = None
        if self.teacher is None:
            return extra, head_extra
        lam, into = self.sft.distill_weight, self.sft.distill_into
        if into in ("tokens", "both"):
            rows, cols, q = soft_token_targets(events, n_target, self.split["seq_items"], self.catalog, self.teacher)
            extra = lambda logits: lam * distill_loss(logits, rows, cols, q)  # noqa: E731
        if into in ("item_head", "both"):
            t_items, t_prob = head_soft_targets(events, n_target, self.teacher)
            head_extra = lambda logp: lam * head_distill_loss(logp, t_items, t_prob)  # noqa: E731
        return extra, head_extra

    def _evaluate(self, epoch: int, record: dict) -> None:
        """Validate (every ``eval_every`` epochs and at the end); save the best policy; count bad evaluations."""
        sft, state = self.sft, self.state
        if not ((epoch + 1) % sft.eval_every == 0 or epoch + 1 == sft.epochs):
            return
        t1 = time.perf_counter()
        with self._averaged():
            record.update(_validate(self.module, self.catalog, self.split, self.ecfg, sft.eval_users, self.rank,
                                    self.world, self.device))
            record["eval_seconds"] = time.perf_counter() - t1
            if record["valid_ndcg@10"] > state["best_ndcg"]:
                state.update(best_ndcg=record["valid_ndcg@10"], best_epoch=epoch + 1, bad_evals=0)
                if self.rank == 0:
                    save_policy(self.module, self.out_dir / "best_policy", self.catalog,
                                {"epoch": epoch + 1, "valid_ndcg@10": record["valid_ndcg@10"],
                                 "ema_decay": sft.ema_decay,
                                 **{k: record[k] for k in ("item_head_beta",) if k in record}})
            else:
                state["bad_evals"] += 1

    def _report(self, record: dict) -> None:
        """Write the checkpoint (engine, optimizer, schedule, EMA, state, RNG) and report it to Ray Train."""
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if self.use_ds:
                self.engine.save_checkpoint(str(tmp), tag="ckpt", save_latest=False)
            elif self.rank == 0:
                save_file({k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()},
                          str(tmp / "model.safetensors"))
                torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
                torch.save(self.sched.state_dict(), tmp / "scheduler.pt")
            if self.rank == 0 and self.ema is not None:
                save_file(self.ema.state_dict(), str(tmp / EMA_FILE))
            if self.rank == 0:
                (tmp / STATE).write_text(json.dumps({**self.state, "torch_rng": torch.get_rng_state().tolist()}))
            if self.world > 1:
                dist.barrier()
            ray.train.report({k: v for k, v in record.items() if isinstance(v, (int, float))},
                             checkpoint=Checkpoint.from_directory(str(tmp)))

    def run(self) -> None:
        resumed = self._restore()
        tracker = None
        if self.rank == 0:
            tracker = Tracker(self.out_dir, name=f"{self.run_dir.name}-sft", config=self.config.get("wandb_config"),
                              use_wandb=self.config.get("wandb", True))
            tracker.log({"event": "resume" if resumed else "start", "epoch": self.state["epoch"],
                         "step": self.state["step"], "world_size": self.world, "backend": self.sft.backend,
                         "zero_stage": self.sft.zero_stage})
        for epoch in range(self.state["epoch"], self.sft.epochs):
            record = self._train_epoch(epoch)
            self._evaluate(epoch, record)
            self.state["epoch"] = epoch + 1
            stop = self.state["bad_evals"] >= self.sft.patience
            record.update(best_epoch=self.state["best_epoch"], best_valid_ndcg=self.state["best_ndcg"])
            self._report(record)
            if tracker is not None:
                tracker.log(record, step=self.state["step"])
                print("[sft] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in record.items()), flush=True)
            if stop:
                break
        if self.rank == 0:
            with self._averaged():
                save_policy(self.module, self.out_dir / "final_policy", self.catalog,
                            {"epoch": self.state["epoch"], "ema_decay": self.sft.ema_decay})
            if tracker is not None:
                tracker.log({"event": "done", **self.state})
                tracker.finish()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point on every worker."""
    SftWorker(config).run()
