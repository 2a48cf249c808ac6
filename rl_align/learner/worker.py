"""One learner rank: a Ray actor holding a DeepSpeed engine over the policy, in a torch.distributed group.

The group is formed explicitly (``init_process_group`` over TCP to rank 0's
address), so the same code runs on one CPU machine (gloo) and across GPU nodes
(nccl). Each step a rank receives its share of the prompts with their rollouts,
runs the objective over micro-batches (DeepSpeed accumulates and all-reduces
gradients and steps at the boundary), and returns metrics summed over ranks.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Optional

import torch

from rl_align.algos import LossInputs, build_objective
from rl_align.algos.batch import StepBatch
from rl_align.algos.preference import PreferenceInputs
from rl_align.config import (
    RlConfig,
    from_dict,
    merge_ds_config,
)
from rl_align.policy.logprobs import continuation_logprobs, grouped_continuation_logprobs
from rl_align.policy.model import disable_dropout, load_policy, save_policy
from rl_align.sid.catalog import PAD, SidCatalog
from rl_align.utils.plugins import load_plugins


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class LearnerRank:
    """Plain class (wrapped by ``ray.remote`` in :mod:`rl_align.learner.group`) so it is testable alone."""

    def __init__(self, rank: int, world: int, cfg: dict, policy_dir: str, catalog_dir: str, threads: int = 1,
                 use_gpu: bool = False, plugins: tuple = ()) -> None:
        load_plugins(list(plugins))  # a plug-in objective registers in this process too
        torch.set_num_threads(max(1, int(threads)))
        self.rank, self.world = rank, world
        self.cfg = from_dict(RlConfig, cfg, source="rl")
        self.policy_dir, self.catalog_dir = policy_dir, catalog_dir
        self.device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
        self.engine = None

    # ------------------------------------------------------------------ setup
    def address(self) -> tuple[str, int]:
        """Where rank 0 listens for the process group (called on rank 0 only)."""
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def pid(self) -> int:
        return os.getpid()

    def setup(self, master_addr: str, master_port: int) -> bool:
        """Join the process group and build the DeepSpeed engine (+ frozen reference when β > 0)."""
        import deepspeed
        import torch.distributed as dist

        backend = "nccl" if self.device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}", rank=self.rank,
                                    world_size=self.world)
        os.environ.setdefault("LOCAL_RANK", "0")
        self.catalog = SidCatalog.load(self.catalog_dir)
        torch.manual_seed(self.cfg.seed)
        model = load_policy(self.policy_dir, self.catalog, self.device)
        if self.cfg.disable_dropout:
            disable_dropout(model)
        model.train()
        self.objective = build_objective(self.cfg)
        needs_ref = self.cfg.beta > 0 or self.objective.needs_reference
        self.ref = load_policy(self.policy_dir, self.catalog, self.device) if needs_ref else None
        if self.ref is not None:
            self.ref.requires_grad_(False)
        c = self.cfg
        per_rank = c.prompts_per_step // self.world
        micro = min(c.micro_batch_prompts, per_rank)
        if per_rank % micro:
            raise ValueError(f"rl.prompts_per_step/learners = {per_rank} is not a multiple of "
                             f"rl.micro_batch_prompts {micro}")
        self.micro = micro
        ds_config = {
            "train_batch_size": micro * (per_rank // micro) * self.world,
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": per_rank // micro,
            "gradient_clipping": c.grad_clip if c.grad_clip > 0 else 0.0,
            "zero_optimization": {"stage": c.zero_stage},
            "steps_per_print": 10**9,
        }
        if c.deepspeed:
            ds_config = merge_ds_config(ds_config, c.deepspeed)
        opt = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, betas=(0.9, 0.99))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, c.warmup_steps)))
        self.engine, self.opt, _, self.sched = deepspeed.initialize(
            model=model, optimizer=opt, lr_scheduler=sched, config=ds_config, dist_init_required=False)
        self.steps = 0
        return True

    # ------------------------------------------------------------------ training
    def _micro_inputs(self, t: dict, sl: slice) -> LossInputs:
        """LossInputs of prompts ``sl`` from the step's tensors ``t`` (:meth:`StepBatch.tensors`, on the device)."""
        pid, pm, gt = t["prompt_ids"][sl], t["prompt_mask"][sl], t["target_tokens"][sl]
        if self.objective.uses_preferences:
            return self._preference_inputs(t, sl)
        if not self.objective.uses_rollouts:
            gt_lp, gt_m = continuation_logprobs(self.engine, pid, pm, gt)
            return LossInputs(gt_logp=gt_lp, gt_mask=gt_m, targets=t["targets"][sl])
        roll = t["rollout_tokens"][sl]                                       # (b, G, T)
        b, G, T = roll.shape
        gt_lp, gt_m, lp, m = self._rollout_logprobs(pid, pm, gt, roll)
        x = LossInputs(gt_logp=gt_lp, gt_mask=gt_m, targets=t["targets"][sl])
        old = t["rollout_logp"][sl].reshape(-1, T).float() * m
        if "rollout_injected" in t:  # injected y*: behaviour log-prob = current one (ratio 1)
            inj = t["rollout_injected"][sl].reshape(-1, 1).bool()
            old = torch.where(inj, lp.detach(), old)
        x.roll_logp, x.roll_old_logp, x.roll_mask, x.roll_ref_logp = lp, old, m, self._ref_logprobs(pid, pm, roll)
        x.rewards = t["rewards"][sl].float()
        x.rollout_items = t["rollout_items"][sl]
        x.target_scores = torch.nan_to_num(t["target_scores"][sl].float(), nan=0.0)
        x.rollout_scores = torch.nan_to_num(t["rollout_scores"][sl].float(), nan=0.0)
        if "sanity_scores" in t:   # AdaGRPO's sanity test: the reward's scores of random catalog items
            x.sanity_scores = torch.nan_to_num(t["sanity_scores"][sl].float(), nan=0.0)
        return x

    def _rollout_logprobs(self, pid, pm, gt, roll):
        """Log-probs with grad of y* (b, Tg) and of the rollouts (b*G, T), with their masks.

        ``rl.shared_prefix``: one prompt forward per group, y* and the G rollouts share its KV cache."""
        b, G, T = roll.shape
        if self.cfg.shared_prefix:
            W = max(T, gt.shape[1])
            conts = torch.full((b, G + 1, W), PAD, dtype=roll.dtype, device=self.device)
            conts[:, 0, : gt.shape[1]] = gt
            conts[:, 1:, :T] = roll
            lp_all, m_all = grouped_continuation_logprobs(self.engine, pid, pm, conts)
            return (lp_all[:, 0, : gt.shape[1]], m_all[:, 0, : gt.shape[1]],
                    lp_all[:, 1:, :T].reshape(b * G, T), m_all[:, 1:, :T].reshape(b * G, T))
        gt_lp, gt_m = continuation_logprobs(self.engine, pid, pm, gt)
        rep = torch.arange(b, device=self.device).repeat_interleave(G)
        lp, m = continuation_logprobs(self.engine, pid[rep], pm[rep], roll.reshape(b * G, T))
        return gt_lp, gt_m, lp, m

    def _preference_inputs(self, t: dict, sl: slice) -> LossInputs:
        """LossInputs of a preference objective: log-probs (and end-of-SID hidden states for RDRW) of each prompt's
        K candidates. ``rl.shared_prefix`` packs them: one prompt forward, the K candidates share its KV cache."""
        pid, pm, cand = t["prompt_ids"][sl], t["prompt_mask"][sl], t["pref_tokens"][sl]   # cand: (b, K, T)
        b, K, T = cand.shape
        hidden_needed = self.objective.needs_hidden
        if self.cfg.shared_prefix:
            out = grouped_continuation_logprobs(self.engine, pid, pm, cand, return_hidden=hidden_needed)
        else:
            rep = torch.arange(b, device=self.device).repeat_interleave(K)
            out = continuation_logprobs(self.engine, pid[rep], pm[rep], cand.reshape(b * K, T),
                                        return_hidden=hidden_needed)
            out = tuple(o.reshape(b, K, *o.shape[1:]) for o in out)
        lp, m = out[0], out[1]
        ref = None
        if self.objective.needs_reference:
            with torch.no_grad():
                if self.cfg.shared_prefix:
                    ref = grouped_continuation_logprobs(self.ref, pid, pm, cand)[0]
                else:
                    rep = torch.arange(b, device=self.device).repeat_interleave(K)
                    ref = continuation_logprobs(self.ref, pid[rep], pm[rep], cand.reshape(b * K, T))[0].reshape(b, K, T)
        pref = PreferenceInputs(logp=lp, mask=m, tokens=cand, positive=t["pref_positive"][sl].bool(),
                                valid=t["pref_items"][sl] >= 0, ref_logp=ref,
                                hidden=out[2] if hidden_needed else None)
        return LossInputs(gt_logp=lp[:, 0], gt_mask=m[:, 0], targets=t["targets"][sl], pref=pref)

    @torch.no_grad()
    def _ref_logprobs(self, pid, pm, roll) -> Optional[torch.Tensor]:
        """(b*G, T) reference-policy log-probs of the rollouts, or None without a reference model (β = 0 and an
        objective that needs none)."""
        if self.ref is None:
            return None
        b, G, T = roll.shape
        if self.cfg.shared_prefix:
            return grouped_continuation_logprobs(self.ref, pid, pm, roll)[0].reshape(b * G, T)
        rep = torch.arange(b, device=self.device).repeat_interleave(G)
        return continuation_logprobs(self.ref, pid[rep], pm[rep], roll.reshape(b * G, T))[0]

    def train_step(self, batch: StepBatch, seed: int = 0) -> dict:
        """One optimizer step (per update pass) over this rank's prompts; returns metrics averaged over ranks.

        ``batch``: this rank's share of the step (:class:`StepBatch`; the rollout and reward fields are read only by
        objectives that use rollouts).
        """
        import torch.distributed as dist

        torch.manual_seed(seed * 1009 + self.rank)
        n = len(batch)
        sums: dict[str, float] = {}
        lists: dict[str, list] = {}
        count = 0
        self.engine.train()
        # numpy → device tensors once per step, not once per micro-batch and update pass
        tensors = batch.tensors(self.device)
        for _ in range(self.cfg.updates_per_step):
            for s in range(0, n, self.micro):
                x = self._micro_inputs(tensors, slice(s, s + self.micro))
                loss, m = self.objective(x)
                self.engine.backward(loss)
                self.engine.step()
                count += 1
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                for k, v in m.items():
                    if isinstance(v, list):
                        lists.setdefault(k, []).extend(v)
                    else:
                        sums[k] = sums.get(k, 0.0) + v
        self.steps += 1
        keys = sorted(sums)
        vec = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(vec)
        out = {k: float(vec[i] / vec[-1]) for i, k in enumerate(keys)}
        # the AdaGRPO diagnostics are per-sample lists: gather every rank's
        if lists:
            if self.world > 1:
                gathered = [None] * self.world
                dist.all_gather_object(gathered, lists)
                lists = {k: [x for g in gathered for x in g[k]] for k in lists}
            out.update(lists)
        out["lr"] = float(self.sched.get_last_lr()[0])
        for k in ("zero_adv_groups",):  # counts are sums, not means
            if k in out:
                out[k] = float(vec[keys.index(k)])
        return out

    # ------------------------------------------------------------------ weights and checkpoints
    def state_dict(self) -> dict:
        """CPU copy of the policy weights (gathered under ZeRO-3)."""
        module = self.engine.module
        if self.cfg.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    def save(self, directory: str) -> bool:
        """DeepSpeed checkpoint (weights + optimizer + scheduler) of this rank into ``directory``."""
        self.engine.save_checkpoint(directory, tag="learner", save_latest=False,
                                    client_state={"learner_steps": self.steps,
                                                  "objective": self.objective.state_dict()})
        return True

    def load(self, directory: str) -> int:
        _, client = self.engine.load_checkpoint(directory, tag="learner", load_optimizer_states=True,
                                                load_lr_scheduler_states=True)
        self.steps = int((client or {}).get("learner_steps", 0))
        self.objective.load_state_dict((client or {}).get("objective", {}))
        return self.steps

    def save_policy(self, directory: str, extra: dict | None = None) -> bool:
        module = self.engine.module
        keep = {"frozen_item_head": self.policy_dir, "freeze_trunk": self.cfg.item_head_trunk == "sft"}
        if self.cfg.zero_stage == 3:  # every rank joins the gather; rank 0 writes
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                if self.rank == 0:
                    save_policy(module, Path(directory), self.catalog, extra, **keep)
        elif self.rank == 0:  # a starting policy's item head is saved unchanged beside the aligned SID policy
            save_policy(module, Path(directory), self.catalog, extra, **keep)
        return True

    def config(self) -> dict:
        return dataclasses.asdict(self.cfg)
