"""Grid sweeps: one run directory per combination of config values, one summary table.

``rl-align sweep CONFIG --grid sid.sa2crq.tau=0.001,0.003 --grid sid.codebook_size=32,64 --stages data,embed,sids``
runs the pipeline for each of the 4 combinations in ``<sweep dir>/<combo>/`` (finished stages are skipped on
a re-run, so an interrupted sweep resumes), in one process sharing one Ray, then writes ``sweep.json`` and
``sweep.md``: the varied values and each run's headline figures (SID statistics, test metrics overall / head /
tail, free-decoding hallucination, aligned policies' test HR@10) — whatever stages the runs reached.
"""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path
from typing import Optional

from rl_align.config import RunConfig, load_config
from rl_align.pipeline import STAGES, run_pipeline
from rl_align.utils.io import read_json, write_json, write_text

log = logging.getLogger("rl_align")


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``["a.b=1,2", "c=x"]`` → ``[("a.b", ["1", "2"]), ("c", ["x"])]``; a malformed spec raises ValueError."""
    out, seen = [], set()
    for spec in specs:
        key, sep, vals = spec.partition("=")
        values = [v.strip() for v in vals.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise ValueError(f"--grid {spec!r}: expected KEY=V1,V2,... (e.g. sid.sa2crq.tau=0.001,0.003)")
        if key in seen:
            raise ValueError(f"--grid: key {key!r} given twice")
        seen.add(key)
        out.append((key.strip(), values))
    return out


def combinations(grid: list[tuple[str, list[str]]]) -> list[list[tuple[str, str]]]:
    """Cartesian product of the grid, in the order the keys were given."""
    keys = [k for k, _ in grid]
    return [list(zip(keys, vals)) for vals in itertools.product(*(v for _, v in grid))]


def combo_name(combo: list[tuple[str, str]]) -> str:
    """A directory name for one combination, e.g. ``tau=0.001_codebook_size=32``."""
    name = "_".join(f"{k.split('.')[-1]}={v}" for k, v in combo) or "base"
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", name)


def summarize(run: Path) -> dict:
    """Headline figures of a run directory (missing stages are simply absent)."""
    row: dict = {}
    if (run / "sids" / "stats.json").exists():
        s = read_json(run / "sids" / "stats.json")
        c = s.get("collisions", {})
        row.update({
            "collision_before": c.get("before", {}).get("collision_rate"),
            "collision_after": c.get("after", {}).get("collision_rate"),
            "mean_len": s.get("mean_code_length"),
            "mean_len_head": s.get("mean_code_length_head20"),
            "mean_len_tail": s.get("mean_code_length_tail80"),
            "utilisation": (sum(lv["utilisation"] for lv in s["levels"]) / len(s["levels"])
                            if s.get("levels") and "utilisation" in s["levels"][0] else None),
            "fit_s": s.get("fit_encode_seconds"),
        })
        bk = c.get("buckets")
        if bk:
            row.update({"codes": bk["n_buckets"], "items_in_shared_codes": bk["items_in_shared_codes"],
                        "max_bucket": bk["max_bucket_size"]})
    if (run / "eval" / "metrics.json").exists():
        t = read_json(run / "eval" / "metrics.json").get("test", {})
        if t:
            b = t["policy_buckets"]
            row.update({"test_hr@10": t["policy"]["hr@10"], "test_ndcg@10": t["policy"]["ndcg@10"],
                        "test_hr@10_head": b["head"].get("hr@10"), "test_hr@10_tail": b["tail"].get("hr@10"),
                        "free_hallucination": t.get("free_hallucination_rate"),
                        "sampled_hallucination": t.get("free_sample_hallucination_rate")})
        v = read_json(run / "eval" / "metrics.json").get("valid", {})
        if v:
            row.update({"valid_hr@10": v["policy"]["hr@10"], "valid_ndcg@10": v["policy"]["ndcg@10"]})
        for part in ("cold", "cold_valid"):
            c = read_json(run / "eval" / "metrics.json").get(part)
            if c:
                row.update({f"{part}_hr@10": c["policy"]["hr@10"], f"{part}_ndcg@10": c["policy"]["ndcg@10"]})
    for tm in sorted((run / "rl").glob("*/test_metrics.json")) if (run / "rl").exists() else []:
        row[f"rl:{tm.parent.name}_test_hr@10"] = read_json(tm)["rl"]["test"]["policy"]["hr@10"]
    return row


def _cell(v) -> str:
    if v is None:
        return "–"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_table(sweep_dir: Path, rows: list[dict]) -> Path:
    """``sweep.json`` + ``sweep.md`` with one row per combination."""
    write_json(sweep_dir / "sweep.json", rows)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    path = sweep_dir / "sweep.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def run_sweep(config: str, grid_specs: list[str], overrides: list[str], stages: Optional[list[str]],
              sweep_dir: Path, resume: bool = True) -> list[dict]:
    """Run every combination (configs are all validated first, so a typo fails before any run)."""

    combos = combinations(parse_grid(grid_specs))
    cfgs = []
    for combo in combos:
        cfg = load_config(config, RunConfig, [*overrides, *(f"{k}={v}" for k, v in combo)])
        if stages:
            unknown = [s for s in stages if s not in STAGES]
            if unknown:
                raise ValueError(f"--stages: unknown stage(s) {unknown}; expected a subset of {list(STAGES)}")
            cfg.stages = list(stages)
        cfgs.append(cfg)
    rows = []
    for combo, cfg in zip(combos, cfgs):
        run = sweep_dir / combo_name(combo)
        log.info("sweep: %s → %s", dict(combo), run)
        run_pipeline(cfg, run, resume=resume)
        rows.append({**dict(combo), **summarize(run)})
        write_table(sweep_dir, rows)   # progress survives an interruption
    return rows
