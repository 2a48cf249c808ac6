"""Shared benchmark helpers: alternating repeats, median/range summaries, policy sizes, machine info.

Every benchmark reports each side's median and range over repeats whose order alternates (side A then B, then
B then A, ...), so neither side always runs on a warmer or a more disturbed machine, and the ratio of medians.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]

# policy sizes on the model-size axis: the presets' Llama 2 × 128 and a ~30M-parameter Llama (head dim 64, which
# vLLM's CPU backend needs); the large one is freshly initialised: speed does not depend on training
POLICY_SIZES = {
    "preset": None,
    "30m": {"hidden_size": 512, "num_layers": 7, "num_heads": 8, "intermediate_size": 2048},
}


def alternate(sides: dict[str, Callable[[], float]], repeats: int, log: Callable[[str], None] = print
              ) -> dict[str, list[float]]:
    """Call every side ``repeats`` times, reversing the order on odd repeats; → {side: [value per repeat]}."""
    out: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for rep in range(repeats):
        for k in (names if rep % 2 == 0 else names[::-1]):
            out[k].append(float(sides[k]()))
            log(f"repeat {rep}: {k} {out[k][-1]:.4g}")
    return out


def summary(values: list[float]) -> dict:
    """{median, min, max, n, values} of one side's repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": list(values)}


def rate_summary(seconds: list[float], work: float) -> dict:
    """Throughput (work / s) summary of per-repeat seconds: median of rates, range."""
    return summary([work / s for s in seconds])


def fmt_range(s: dict, spec: str = ".1f") -> str:
    """'median (min–max)'."""
    return f"{s['median']:{spec}} ({s['min']:{spec}}–{s['max']:{spec}})"


def machine() -> dict:
    """What the figures were measured on (CPU count, GPU if any, library versions)."""
    import torch

    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def sized_run(run: Path, dest: Path, size: str, seed: int = 0) -> tuple[Path, list[str]]:
    """A copy of ``run`` whose SFT policy is the ``size`` policy (random init for non-preset sizes).

    Returns (run dir, config overrides that describe the policy). The copy skips RL/Ray/wandb outputs.
    """
    if POLICY_SIZES[size] is None:
        return run, []
    from rl_align.config import PolicyConfig, RunConfig, load_config
    from rl_align.policy.model import build_policy, save_policy
    from rl_align.sid.catalog import SidCatalog

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("rl", "ray_train", "wandb", "final_policy"))
    cfg = load_config(run / "config.yaml", RunConfig)
    pcfg = PolicyConfig(**{**cfg.policy.__dict__, **POLICY_SIZES[size]})
    catalog = SidCatalog.load(run / "sids" / "catalog")
    model = build_policy(pcfg, catalog, cfg.data.max_history, seed=seed)
    save_policy(model, dest / "sft" / "best_policy", catalog)
    return dest, [f"policy.{k}={v}" for k, v in POLICY_SIZES[size].items()]


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
