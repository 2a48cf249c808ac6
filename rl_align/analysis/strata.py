"""Stratified analysis of reward guidance (the AdaGRPO paper's evidence), ``rl-align analyze strata RUN``.

From one checkpoint (the run's SFT policy), the prompts that K alignment steps will see are diagnosed with the
quantities AdaGRPO's gate thresholds — *difficulty* (``rl.adagrpo.difficulty``: y*'s rank among the rollouts by
policy log-prob, or the rollout group's entropy) and *discriminability* (``rl.adagrpo.discriminability``: the
share of negatives the reward's ranker puts below y*, or the margin) — and binned into quantile strata. Then the
same checkpoint is updated K steps twice on the Ray controller, once with GRPO only and once with NLL only
(``rl.algo`` grpo / nll; every other setting from the run's config), and each prompt's change in log π(y*|x) and
in hit@k (y* in the top k of a constrained beam, seen items excluded) is measured. Per stratum: the mean change
under each update, the GRPO − NLL difference and the share the gate would admit. The paper's claim is that reward
guidance helps only where both diagnostics pass; the table shows whether it holds on this run.

With a faulty reward (``reward.fault_share`` > 0: the reward model wrong for a fixed share of users) the result
also splits the prompts by segment, faulty or healthy users: what the gate admits of each and what each update
does there.

Writes ``<run>/analysis/strata/{strata.json, strata.md, strata.png}`` (``strata_faulty-<kind>/`` with a faulty
reward).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rl_align.algos.gates import adagrpo_gate, random_negatives
from rl_align.checks import load_checked
from rl_align.config import RunConfig
from rl_align.data.prompts import recent_examples, seen_before
from rl_align.driver.controller import prompt_order, reward_embeddings, run_fresh, sanity_weights
from rl_align.policy.data import build_prompts
from rl_align.policy.logprobs import continuation_logprobs
from rl_align.policy.model import load_policy
from rl_align.rewards.actor import RewardScorer
from rl_align.rewards.scorers import faulty_users, scorer_path
from rl_align.rollouts.base import GenerationRequest
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import load_npz, write_json

log = logging.getLogger("rl_align")


@dataclass
class PromptSet:
    """The analysed prompts: rows of the training examples and what the policy sees of them.

    Attributes: rows (n,), users (n,), history (n, H), targets (n,), ids / mask (n, P) prompts, banned (n, S).
    """

    rows: np.ndarray
    users: np.ndarray
    history: np.ndarray
    targets: np.ndarray
    ids: torch.Tensor
    mask: torch.Tensor
    banned: np.ndarray


def prompt_set(cfg: RunConfig, split: dict, catalog: SidCatalog, steps: int) -> PromptSet:
    """The prompts ``steps`` alignment steps of ``cfg.rl`` draw (the controller's pool and seeded order), each once."""
    r = cfg.rl
    pool = recent_examples(split["train_users"], split["train_positions"], r.recent_prompts)
    idx = np.concatenate([prompt_order(pool.size, r.seed, s, r.prompts_per_step) for s in range(steps)])
    rows = pool[np.unique(idx)]
    ids, mask = build_prompts(split["train_history"][rows], catalog, split["train_users"][rows])
    return PromptSet(rows, split["train_users"][rows], split["train_history"][rows],
                     split["train_targets"][rows].astype(np.int64), ids, mask, seen_before(split, rows))


@torch.no_grad()
def measure(model, catalog: SidCatalog, ps: PromptSet, k: int = 10, beams: int = 20, batch: int = 64) -> dict:
    """Per prompt: log π(y*|x) (n,) and whether y* is in the top ``k`` of a constrained beam (n,), seen items banned."""
    model.eval()
    engine = TorchEngine(model, catalog)
    gt = torch.from_numpy(catalog.tokens[ps.targets].astype(np.int64))
    logp, hit = [], []
    for s in range(0, len(ps.rows), batch):
        sl = slice(s, s + batch)
        lp, _ = continuation_logprobs(model, ps.ids[sl], ps.mask[sl], gt[sl])
        logp.append(lp.sum(1).numpy())
        res = engine.generate(GenerationRequest(ps.ids[sl], ps.mask[sl], n=beams, mode="beam", constrained=True,
                                                banned_items=torch.from_numpy(ps.banned[sl])))
        items = res.items.numpy()
        if catalog.has_buckets:   # a bucket code's items, ranked inside the bucket (the evaluator's list)
            items, _ = catalog.buckets.expand(items, res.seq_logprob.numpy(), ps.history[sl], beams, ps.banned[sl],
                                              users=ps.users[sl])
        hit.append((items[:, :k] == ps.targets[sl, None]).any(1))
    return {"logp": np.concatenate(logp), "hit": np.concatenate(hit)}


@torch.no_grad()
def diagnose(model, catalog: SidCatalog, ps: PromptSet, cfg: RunConfig, scorer: RewardScorer,
             batch: int = 64, sanity_weights: Optional[np.ndarray] = None) -> dict:
    """The gate's two statistics and verdict per prompt, from G rollouts of the run's rollout mode: (n,) each.
    ``sanity_weights`` (n_items,): the sanity items' draw weights (``rl.adagrpo.sanity_draw: popularity``)."""
    r = cfg.rl
    engine = TorchEngine(model.eval(), catalog)
    gt = torch.from_numpy(catalog.tokens[ps.targets].astype(np.int64))
    out: dict[str, list] = {"difficulty": [], "discriminability": [], "gate": [], "difficult": [], "discriminable": []}
    k = r.adagrpo.sanity_negatives   # the gate's sanity test: K random items per prompt, 0 = off
    for s in range(0, len(ps.rows), batch):
        sl = slice(s, s + batch)
        n = len(ps.rows[sl])
        seeds = torch.arange(n) + r.seed * 100003 + s
        res = engine.generate(GenerationRequest(ps.ids[sl], ps.mask[sl], n=r.group_size, mode=r.rollout_mode,
                                                constrained=r.constrained, temperature=r.temperature, seeds=seeds,
                                                banned_items=torch.from_numpy(ps.banned[sl]) if r.exclude_seen
                                                else None))
        gt_lp, _ = continuation_logprobs(model, ps.ids[sl], ps.mask[sl], gt[sl])
        items = res.items.numpy()
        if catalog.has_buckets:   # the item each code stands for, as the controller resolves rollouts
            items = catalog.buckets.resolve(items, ps.history[sl], ps.banned[sl] if r.exclude_seen else None,
                                            ps.users[sl])
        negs = (random_negatives(ps.targets[sl], scorer.n_items, k, r.seed * 100003 + s, weights=sanity_weights)
                if k else None)
        sc = scorer.score(ps.users[sl], ps.history[sl], items, ps.targets[sl], with_target_scores=True,
                          sanity_items=negs)
        g = adagrpo_gate(r.adagrpo, gt_lp.sum(1), res.seq_logprob, torch.from_numpy(items),
                         torch.from_numpy(ps.targets[sl]),
                         torch.from_numpy(np.nan_to_num(sc["target_scores"])),
                         torch.from_numpy(np.nan_to_num(sc["ranker_scores"])),
                         torch.from_numpy(np.nan_to_num(sc["sanity_scores"])) if k else None)
        out["difficulty"].append(g.difficulty_value.numpy())
        out["discriminability"].append(g.disc_value.numpy())
        out["gate"].append(g.gate.numpy())
        out["difficult"].append(g.difficult.numpy())
        out["discriminable"].append(g.discriminable.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def quantile_bins(v: np.ndarray, q: int) -> tuple[np.ndarray, list[str]]:
    """(n,) bin index of each value by ``q`` quantiles, and the labels of the bins that occur.

    Cut points are the interior quantiles; a value equal to a cut point goes to the bin above, so a mass point
    (e.g. y* outranked by all G rollouts: gt_rank = G + 1 for most prompts) becomes a bin of its own instead of
    swallowing the others. NaN (no negative to compare y* with) gets its own bin "n/a", last.
    """
    fin = np.isfinite(v)
    if fin.any():
        x = v[fin]
        inner = np.unique(np.quantile(x, np.linspace(0, 1, q + 1))[1:-1])
        inner = inner[inner > x.min()]
        lo, hi = np.r_[x.min(), inner], np.r_[inner, x.max()]
    else:
        lo = hi = np.zeros(1)
    n_fin = lo.size
    labels = [f"{a:.3g}" if a == c else f"[{a:.3g}, {c:.3g}{']' if i == n_fin - 1 else ')'}"
              for i, (a, c) in enumerate(zip(lo, hi))] + ["n/a"]
    b = np.full(v.shape, n_fin, np.int64)
    if fin.any():
        b[fin] = np.searchsorted(inner, v[fin], side="right")
    used = np.unique(b)
    return np.searchsorted(used, b), [labels[u] for u in used]


def cells(diff_bin: np.ndarray, disc_bin: np.ndarray, values: dict[str, np.ndarray]) -> list[dict]:
    """One dict per occupied (difficulty bin, discriminability bin): n and the mean of every value there."""
    out = []
    for i in np.unique(diff_bin):
        for j in np.unique(disc_bin):
            sel = (diff_bin == i) & (disc_bin == j)
            if sel.any():
                out.append({"difficulty_bin": int(i), "disc_bin": int(j), "n": int(sel.sum()),
                            **{k: float(np.mean(v[sel])) for k, v in values.items()}})
    return out


def update(run: Path, overrides: list[str], algo: str, steps: int) -> Path:
    """``steps`` steps of ``algo`` from the run's SFT policy on the Ray controller; → its final policy dir."""
    cfg = load_checked(run / "config.yaml", [*overrides, f"rl.algo={algo}", f"rl.steps={steps}",
                                             f"rl.tag=strata-{algo}", f"rl.eval_every={steps}",
                                             f"rl.checkpoint_every={steps}", "wandb=false"])
    return run_fresh(cfg, run) / "final_policy"


def analyze_strata(run: Path, overrides: list[str], steps: int = 10, q: int = 3, k: int = 10,
                   algos: tuple[str, ...] = ("grpo", "nll"), out: Optional[Path] = None) -> dict:
    """The whole analysis (see the module doc); returns what ``strata.json`` holds."""
    cfg = load_checked(run / "config.yaml", overrides)
    catalog = SidCatalog.load(run / "sids" / "catalog")
    split = load_npz(run / "data" / "split.npz")
    ps = prompt_set(cfg, split, catalog, steps)
    sft = load_policy(run / "sft" / "best_policy", catalog)
    ranker = scorer_path(run, cfg.reward.scorer)
    scorer = RewardScorer(ranker if ranker.exists() else None, cfg.reward, reward_embeddings(cfg, run),
                          n_items=catalog.n_items)
    log.info("strata: %d prompts from %d steps of %d; diagnosing the SFT policy", len(ps.rows), steps,
             cfg.rl.prompts_per_step)
    diag = diagnose(sft, catalog, ps, cfg, scorer, sanity_weights=sanity_weights(cfg, split, catalog.n_items))
    before = measure(sft, catalog, ps, k)
    values: dict[str, np.ndarray] = {"gate": diag["gate"], "logp_before": before["logp"],
                                     "hit_before": before["hit"].astype(float)}
    for algo in algos:
        log.info("strata: %d %s steps from the SFT policy", steps, algo)
        after = measure(load_policy(update(run, overrides, algo, steps), catalog), catalog, ps, k)
        values[f"dlogp_{algo}"] = after["logp"] - before["logp"]
        values[f"dhit_{algo}"] = after["hit"].astype(float) - before["hit"]
    db, dlab = quantile_bins(diag["difficulty"], q)
    cb, clab = quantile_bins(diag["discriminability"], q)
    g = diag["gate"] > 0
    res = {"run": str(run), "prompts": int(len(ps.rows)), "steps": steps, "k": k, "quantiles": q,
           "difficulty": cfg.rl.adagrpo.difficulty, "discriminability": cfg.rl.adagrpo.discriminability,
           "gate_config": dict(vars(cfg.rl.adagrpo)), "lr": cfg.rl.lr, "prompts_per_step": cfg.rl.prompts_per_step,
           "reward": dict(cfg.reward.functions), "rollout_mode": cfg.rl.rollout_mode, "algos": list(algos),
           "difficulty_bins": dlab, "disc_bins": clab, "cells": cells(db, cb, values),
           "gate_on": masked_means(values, g), "gate_off": masked_means(values, ~g),
           "admitted": float(g.mean())}
    if cfg.reward.fault_share > 0:
        bad = faulty_users(scorer.n_users, cfg.reward.fault_share, cfg.reward.fault_seed)[ps.users]
        res["fault"] = {"share": cfg.reward.fault_share, "kind": cfg.reward.fault_kind,
                        "segments": fault_segments(bad, g, values)}
    out = out or run / "analysis" / ("strata" + (f"_faulty-{cfg.reward.fault_kind}" if "fault" in res else ""))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "strata.json", res)
    (out / "strata.md").write_text(strata_markdown(res))
    heatmaps(res, out / "strata.png")
    return res


def masked_means(values: dict[str, np.ndarray], m: np.ndarray) -> dict[str, Optional[float]]:
    """Each (n,) value's mean over the prompts where ``m`` (n,) holds; None for every key when none does."""
    return {k: float(np.mean(v[m])) if m.any() else None for k, v in values.items()}


def fault_segments(bad: np.ndarray, gate: np.ndarray, values: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per segment of a faulty reward (``reward.fault_*``; ``bad`` (n,) the prompts of faulty users): prompts, the
    gate's admission and each value's mean, overall and split by the gate."""
    out = {}
    for name, seg in (("faulty", bad), ("healthy", ~bad)):
        row: dict = {"prompts": int(seg.sum()), "admitted": float(gate[seg].mean()) if seg.any() else None}
        for part, m in (("all", seg), ("gate_on", seg & gate), ("gate_off", seg & ~gate)):
            row[part] = masked_means(values, m)
        out[name] = row
    return out


def _fault_lines(res: dict) -> list[str]:
    """The faulty reward's segments as a markdown table (nothing without ``res['fault']``)."""
    f, algos = res.get("fault"), res["algos"]
    if not f:
        return []
    lines = ["", f"Reward faulty for {f['share']:.0%} of the users (`{f['kind']}`): by segment.", "",
             "| users | prompts | gate admits | " + " | ".join(f"Δ log π(y*) {a} | Δ hit {a}" for a in algos) + " |",
             "|---|---|---|" + "---|" * (2 * len(algos))]
    for name, seg in f["segments"].items():
        for part in ("all", "gate_on", "gate_off"):
            d = seg[part]
            if d.get("gate") is None:
                continue
            cells = " | ".join(f"{d[f'dlogp_{a}']:+.4f} | {d[f'dhit_{a}']:+.3f}" for a in algos)
            label = name if part == "all" else f"{name}, {part.replace('_', ' ')}"
            admits = f"{seg['admitted']:.0%}" if part == "all" else ""
            lines.append(f"| {label} | {seg['prompts'] if part == 'all' else ''} | {admits} | {cells} |")
    return lines


def strata_markdown(res: dict) -> str:
    """The per-stratum table and the gate-on / gate-off summary."""
    algos = res["algos"]
    head = ("| difficulty | discriminability | n | gate admits | log π(y*) before | hit@{k} before | "
            .format(k=res["k"]) + " | ".join(f"Δ log π(y*) {a} | Δ hit {a}" for a in algos) + " |")
    lines = [f"# Stratified analysis: {res['steps']} steps of {' / '.join(algos)} from the SFT policy, "
             f"{res['prompts']} prompts", "",
             f"Difficulty = `{res['difficulty']}`, discriminability = `{res['discriminability']}` "
             f"({res['quantiles']} quantile bins each); gate `{res['gate_config']}`; reward {res['reward']}, "
             f"rollouts `{res['rollout_mode']}`, lr {res['lr']:g}. The gate admits {res['admitted']:.1%} of the "
             "prompts.", "", head,
             "|" + "---|" * (6 + 2 * len(algos))]
    for c in res["cells"]:
        lines.append(f"| {res['difficulty_bins'][c['difficulty_bin']]} | {res['disc_bins'][c['disc_bin']]} | "
                     f"{c['n']} | {c['gate']:.0%} | {c['logp_before']:.3f} | {c['hit_before']:.3f} | "
                     + " | ".join(f"{c[f'dlogp_{a}']:+.4f} | {c[f'dhit_{a}']:+.3f}" for a in algos) + " |")
    lines += ["", "| prompts | " + " | ".join(f"Δ log π(y*) {a} | Δ hit {a}" for a in algos) + " |",
              "|---|" + "---|" * (2 * len(algos))]
    for name, key in (("gate on (difficult ∧ discriminable)", "gate_on"), ("gate off", "gate_off")):
        d = res[key]
        if d.get("gate") is None:
            continue
        lines.append(f"| {name} | " + " | ".join(f"{d[f'dlogp_{a}']:+.4f} | {d[f'dhit_{a}']:+.3f}" for a in algos)
                     + " |")
    return "\n".join(lines + _fault_lines(res)) + "\n"


def heatmaps(res: dict, path: Path) -> None:
    """One heatmap per algorithm of Δ log π(y*) per stratum, plus their difference and the gate's admission share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nd, nc = len(res["difficulty_bins"]), len(res["disc_bins"])
    panels = [(f"dlogp_{a}", f"Δ log π(y*), {a}") for a in res["algos"]]
    if len(res["algos"]) == 2:
        panels.append(("diff", f"Δ log π(y*): {res['algos'][0]} − {res['algos'][1]}"))
    panels.append(("gate", "gate admits"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        grid = np.full((nd, nc), np.nan)
        for c in res["cells"]:
            v = (c[f"dlogp_{res['algos'][0]}"] - c[f"dlogp_{res['algos'][1]}"]) if key == "diff" else c[key]
            grid[c["difficulty_bin"], c["disc_bin"]] = v
        lim = np.nanmax(np.abs(grid)) or 1.0
        im = ax.imshow(grid, cmap="viridis" if key == "gate" else "RdBu",
                       vmin=0 if key == "gate" else -lim, vmax=1 if key == "gate" else lim, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.3f}" if key != "gate" else f"{v:.0%}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(nc), res["disc_bins"], rotation=30, fontsize=7)
        ax.set_yticks(range(nd), res["difficulty_bins"], fontsize=7)
        ax.set_xlabel(f"discriminability ({res['discriminability']})")
        ax.set_ylabel(f"difficulty ({res['difficulty']})")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
