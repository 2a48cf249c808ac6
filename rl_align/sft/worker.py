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

import numpy as np
import torch

from rl_align.config import EvalConfig, PolicyConfig, SftConfig, from_dict
from rl_align.eval.evaluate import eval_set, metrics, rank_with_engine
from rl_align.policy.data import windows_to_batch
from rl_align.policy.model import add_embedding_dropout, build_policy, save_policy
from rl_align.ray_utils import STATE, resume_checkpoint
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sft.ema import WeightEma
from rl_align.sft.schedule import epoch_windows, shard_rows, warmup_cosine
from rl_align.sid.catalog import SidCatalog
from rl_align.tracking import Tracker
from rl_align.utils.io import load_npz

EMA_FILE = "ema.safetensors"


def _validate(module, catalog, split, ecfg: EvalConfig, limit, rank: int, world: int, device) -> dict:
    """Sharded constrained-beam validation; returns all-reduced HR@10 / NDCG@10 over the valid users."""
    import torch.distributed as dist

    es = eval_set(split, "valid", limit)
    sel = np.arange(rank, es.targets.size, world)
    sub = type(es)(es.users[sel], es.targets[sel], es.history[sel], es.seen[sel])
    was_training = module.training
    engine = TorchEngine(module, catalog, device)
    ranked, _ = rank_with_engine(engine, catalog, sub, max(10, ecfg.beams), ecfg.exclude_history, ecfg.batch_size)
    module.train(was_training)
    m = metrics(ranked, sub.targets, [10])
    sums = torch.tensor([m["hr@10"] * sel.size, m["ndcg@10"] * sel.size, float(sel.size)], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(sums)
    n = max(sums[2].item(), 1.0)
    return {"valid_hr@10": sums[0].item() / n, "valid_ndcg@10": sums[1].item() / n}


def train_loop_per_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch.distributed as dist
    from ray.train import Checkpoint

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    sft = from_dict(SftConfig, config["sft"], source="sft")
    pcfg = from_dict(PolicyConfig, config["policy"], source="policy")
    ecfg = from_dict(EvalConfig, config["eval"], source="eval")
    torch.set_num_threads(max(1, int(sft.cpus_per_worker)))
    run_dir = Path(config["run_dir"])
    out_dir = run_dir / "sft"
    (out_dir / "pids").mkdir(parents=True, exist_ok=True)
    (out_dir / "pids" / f"rank{rank}.pid").write_text(str(os.getpid()))
    catalog = SidCatalog.load(run_dir / "sids" / "catalog")
    split = load_npz(run_dir / "data" / "split.npz")
    device = ray.train.torch.get_device() if sft.use_gpu else torch.device("cpu")

    model = build_policy(pcfg, catalog, config["max_history"], seed=sft.seed).to(device)
    add_embedding_dropout(model, pcfg.embedding_dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=sft.lr, weight_decay=sft.weight_decay, betas=(0.9, 0.98))
    window = sft.window_items or config["max_history"] + 1
    n_windows = epoch_windows(split, window, sft.seed, 0).shape[0]
    steps_per_epoch = max(1, n_windows // sft.batch_size)
    sched = warmup_cosine(opt, sft.warmup_steps, sft.epochs * steps_per_epoch)
    use_ds = sft.backend == "deepspeed"
    if use_ds:
        import deepspeed

        ds_config = {
            "train_batch_size": sft.batch_size,
            "train_micro_batch_size_per_gpu": sft.batch_size // world,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": sft.grad_clip,
            "zero_optimization": {"stage": sft.zero_stage},
            "bf16": {"enabled": sft.bf16},
            "steps_per_print": 10**9,
        }
        engine, opt, _, sched = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                                     config=ds_config, dist_init_required=False)
        module = engine.module
    else:
        engine = ray.train.torch.prepare_model(model)
        module = engine.module if hasattr(engine, "module") else engine

    ema = WeightEma(module, sft.ema_decay) if sft.ema_decay > 0 else None

    def averaged():
        """Validate and save the weight average when ``sft.ema_decay`` is on, else the weights as trained."""
        return ema.applied(module) if ema is not None else nullcontext(module)

    state = {"epoch": 0, "step": 0, "best_ndcg": -1.0, "best_epoch": -1, "bad_evals": 0}
    ckpt = resume_checkpoint(ray.train.get_checkpoint(), out_dir)
    if ckpt is not None:
        with ckpt.as_directory() as d:
            d = Path(d)
            state = json.loads((d / STATE).read_text())
            rng = state.pop("torch_rng", None)
            if rng is not None:  # dropout continues exactly as in an uninterrupted run
                torch.set_rng_state(torch.tensor(rng, dtype=torch.uint8))
            if use_ds:
                engine.load_checkpoint(str(d), tag="ckpt", load_optimizer_states=True, load_lr_scheduler_states=True)
            else:
                from safetensors.torch import load_file

                module.load_state_dict(load_file(str(d / "model.safetensors")), strict=False)
                opt.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
                sched.load_state_dict(torch.load(d / "scheduler.pt", weights_only=True))
            if ema is not None:
                from safetensors.torch import load_file

                if not (d / EMA_FILE).exists():
                    raise ValueError(f"sft.ema_decay is {sft.ema_decay} but the checkpoint being resumed ({d}) has "
                                     f"no {EMA_FILE}: it was trained without it; resume with sft.ema_decay=0")
                ema.load_state_dict(load_file(str(d / EMA_FILE)))
        if rank == 0:
            print(f"[sft] resumed from checkpoint at epoch {state['epoch']} (step {state['step']})", flush=True)

    tracker = None
    if rank == 0:
        tracker = Tracker(out_dir, name=f"{run_dir.name}-sft", config=config.get("wandb_config"),
                          use_wandb=config.get("wandb", True))
        tracker.log({"event": "start" if ckpt is None else "resume", "epoch": state["epoch"], "step": state["step"],
                     "world_size": world, "backend": sft.backend, "zero_stage": sft.zero_stage})

    for epoch in range(state["epoch"], sft.epochs):
        module.train()
        windows = epoch_windows(split, window, sft.seed, epoch)
        batches = shard_rows(windows.shape[0], sft.batch_size, rank, world)
        t0 = time.perf_counter()
        tot = torch.zeros(2, dtype=torch.float64)
        it = batches
        if rank == 0:
            from tqdm import tqdm

            it = tqdm(batches, desc=f"sft epoch {epoch + 1}/{sft.epochs}", leave=False, mininterval=2.0)
        for rows in it:
            batch = {k: v.to(device) for k, v in windows_to_batch(windows[rows], catalog).items()}
            out = engine(**batch)
            loss = out.loss
            if use_ds:
                engine.backward(loss)
                engine.step()
            else:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if sft.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), sft.grad_clip)
                opt.step()
                sched.step()
            if ema is not None:
                ema.update(module)
            state["step"] += 1
            tot += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(tot)
        record = {"epoch": epoch + 1, "step": state["step"], "train_loss": (tot[0] / max(tot[1], 1)).item(),
                  "lr": sched.get_last_lr()[0], "train_seconds": time.perf_counter() - t0,
                  "windows_per_s": len(batches) * sft.batch_size / max(time.perf_counter() - t0, 1e-9)}
        last = epoch + 1 == sft.epochs
        if (epoch + 1) % sft.eval_every == 0 or last:
            t1 = time.perf_counter()
            with averaged():
                record.update(_validate(module, catalog, split, ecfg, sft.eval_users, rank, world, device))
                record["eval_seconds"] = time.perf_counter() - t1
                if record["valid_ndcg@10"] > state["best_ndcg"]:
                    state.update(best_ndcg=record["valid_ndcg@10"], best_epoch=epoch + 1, bad_evals=0)
                    if rank == 0:
                        save_policy(module, out_dir / "best_policy", catalog,
                                    {"epoch": epoch + 1, "valid_ndcg@10": record["valid_ndcg@10"],
                                     "ema_decay": sft.ema_decay})
                else:
                    state["bad_evals"] += 1
        state["epoch"] = epoch + 1
        stop = state["bad_evals"] >= sft.patience
        record.update(best_epoch=state["best_epoch"], best_valid_ndcg=state["best_ndcg"])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            if use_ds:
                engine.save_checkpoint(str(tmp), tag="ckpt", save_latest=False)
            elif rank == 0:
                from safetensors.torch import save_file

                save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                          str(tmp / "model.safetensors"))
                torch.save(opt.state_dict(), tmp / "optimizer.pt")
                torch.save(sched.state_dict(), tmp / "scheduler.pt")
            if rank == 0 and ema is not None:
                from safetensors.torch import save_file

                save_file(ema.state_dict(), str(tmp / EMA_FILE))
            if rank == 0:
                (tmp / STATE).write_text(json.dumps({**state, "torch_rng": torch.get_rng_state().tolist()}))
            if world > 1:
                dist.barrier()
            ray.train.report({k: v for k, v in record.items() if isinstance(v, (int, float))},
                             checkpoint=Checkpoint.from_directory(str(tmp)))
        if tracker is not None:
            tracker.log(record, step=state["step"])
            print("[sft] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in record.items()), flush=True)
        if stop:
            break
    if rank == 0:
        with averaged():
            save_policy(module, out_dir / "final_policy", catalog, {"epoch": state["epoch"], "ema_decay": sft.ema_decay})
        if tracker is not None:
            tracker.log({"event": "done", **state})
            tracker.finish()
