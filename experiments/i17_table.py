#!/usr/bin/env python
"""Issue 17 tables over SFT seeds: every reward model's ceiling (valid, test) and the alignment runs against SFT and
against each other, paired on the same test users and pooled over seeds (exact McNemar on the pooled discordant
users).

Usage: python experiments/i17_table.py runs/i17-rw-s0 runs/i17-rw-s1 runs/i17-rw-s2 \
           --tags paper-ensemble-adagrpo-lr0.00003 paper-ensemble-nll-lr0.00003  → Markdown on stdout
       --sft-eval metrics_sft_item-head-u0-b0.json: SFT's figures from that file of <run>/eval instead of
           metrics.json (e.g. the beam alone of a policy with an item head, when the runs served the beam:
           `rl-align eval RUN --split both --item-head-betas 0 --item-head-union 0`)
       --tag-from TAG RUN RUN RUN: read TAG's alignment runs from these run dirs, one per run above and in the same
           order (copies of the same SFT runs with another reward, say); refused unless each holds a byte-identical
           data/split.npz and SFT checkpoint, so the users and the starting policy are the same
       --rl-seeds=-rs101 (the = keeps a leading dash a value): pool each tag T with T-rs101 where that alignment
           exists (the same SFT checkpoints, another rl.seed): figures are means over every run; a paired test with
           more than one run on a side compares per-user mean hits, Wilcoxon signed-rank (p_W), and counts users
           whose mean hit rose / fell
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scipy.stats import wilcoxon  # noqa: E402

from rl_align.eval.significance import paired_hr  # noqa: E402


def _ms(vals: list[float], fmt: str = ".4f") -> str:
    a = np.array(vals, float)
    return f"{a.mean():{fmt}} ± {a.std(ddof=1):{fmt}}" if a.size > 1 else f"{a.mean():{fmt}}"


def ceilings(runs: list[Path]) -> list[str]:
    names = ["din"] + [n for n in ("sasrec", "gru4rec", "ensemble") if (runs[0] / "ranker" / "scorers" / n).is_dir()]
    out = ["| reward model | held-out AUC | valid: ranker alone | valid: best HR@10 / policy (gain) | test: ranker "
           "alone | test: best HR@10 / policy (gain) |", "|---|---|---|---|---|---|"]
    for n in names:
        cells = {split: [json.loads((r / "ranker" / ("eval" + ("" if n == "din" else f"_{n}")
                                                    + ("" if split == "test" else f"_{split}") + ".json")).read_text())
                         for r in runs] for split in ("valid", "test")}
        row = [n, _ms([e["heldout"]["heldout_auc"] for e in cells["test"]])
               + (" (in-sample)" if any(e["heldout"].get("in_sample") for e in cells["test"]) else "")]
        for split in ("valid", "test"):
            evs = cells[split]
            pol = [e["rerank"]["policy"]["hr@10"] for e in evs]
            best = [max([e["rerank"]["policy"]["hr@10"]] + [m["hr@10"] for m in e["rerank"]["alpha"].values()])
                    for e in evs]
            row += [_ms([e["rerank"]["ranker_only"]["hr@10"] for e in evs]),
                    f"{_ms(best)} / {_ms(pol)} ({_ms([e['rerank']['gain'] for e in evs], '.3f')}×)"]
        out.append("| " + " | ".join(row) + " |")
    return out


def _ranks(run: Path, tag: str | None, kind: str, sft_eval: str = "metrics.json"
           ) -> tuple[np.ndarray, float, float, float]:
    """(test target ranks, HR@10, sampled hallucination, NDCG@10) of SFT (tag None: from <run>/eval/<sft_eval>) or
    an alignment checkpoint."""
    if tag is None:
        t = json.loads((run / "eval" / sft_eval).read_text())["test"]
    else:
        t = json.loads((run / "rl" / tag / "test_metrics.json").read_text())[kind]["test"]
    return (np.array(t["target_rank"]), t["policy"]["hr@10"], t["free_sample_hallucination_rate"],
            t["policy"]["ndcg@10"])


def _valid(run: Path, tag: str | None, kind: str, sft_eval: str = "metrics.json") -> float:
    """Valid HR@10 of the checkpoint: SFT's own, the best step's (``rl``) or the last step's (``rl-final``)."""
    if tag is None:
        return json.loads((run / "eval" / sft_eval).read_text())["valid"]["policy"]["hr@10"]
    s = json.loads((run / "rl" / tag / "summary.json").read_text())
    return s["best_valid_hr@10"] if kind == "rl" else s["evals"][-1]["valid_hr@10"]


def _checkpoints(run: Path, tag: str) -> list[tuple[str, str, str]]:
    """(checkpoint, label, the reference's checkpoint to pair it with) for each row of ``tag``: best on valid and
    final; a refit (``rl.steps_from``) only its last step, the one valid chose, paired with the reference's
    best-on-valid checkpoint (its own valid figures saw the valid event in its prompts: not shown)."""
    src = json.loads((run / "rl" / tag / "summary.json").read_text())["rl"].get("steps_from")
    if src:
        return [("rl-final", f"the step valid chose in {src}", "rl")]
    return [("rl", "best on valid", "rl"), ("rl-final", "final", "rl-final")]


def _paired(got: list, base: list) -> str:
    """+won / −lost and the exact McNemar p of ``got`` against ``base``, pooled over the seeds' test users.

    ``got`` / ``base``: per SFT seed, a list of replicate runs' ``_ranks`` (one run each: McNemar); with more than
    one run on a side, per-user mean hits over its runs, compared by a Wilcoxon signed-rank test (p_W)."""
    if max(len(x) for x in got + base) == 1:
        r = paired_hr(np.concatenate([b[0][0] for b in base]), np.concatenate([g[0][0] for g in got]), n_boot=1)
        return f"+{r['wins']} / −{r['losses']}, p {r['p']:.3g}"
    d = np.concatenate([_mean_hits(g) - _mean_hits(b) for g, b in zip(got, base)])
    p = wilcoxon(d[d != 0]).pvalue if (d != 0).any() else 1.0
    return f"+{int((d > 0).sum())} / −{int((d < 0).sum())}, p_W {p:.3g}"


def _mean_hits(reps: list) -> np.ndarray:
    """(N,) each test user's HR@10 averaged over replicate runs' ``_ranks``."""
    return np.mean([(r[0] >= 0) & (r[0] < 10) for r in reps], axis=0)


def replicates(runs: list[Path], tag: str, suffixes: list[str]) -> list[str]:
    """``tag`` and each ``tag + suffix`` (``--rl-seeds``) whose alignment exists in any of ``runs``."""
    return [tag] + [tag + s for s in suffixes if any((r / "rl" / (tag + s)).is_dir() for r in runs)]


def same_start(runs: list[Path], others: list[Path]) -> None:
    """Refuse sibling runs that do not share each run's split and SFT checkpoint byte for byte (ValueError)."""
    if len(others) != len(runs):
        raise ValueError(f"--tag-from: expected {len(runs)} run dirs (one per run), got {len(others)}")
    for r, o in zip(runs, others):
        for rel in ["data/split.npz"] + sorted(str(f.relative_to(r)) for f in (r / "sft" / "best_policy").rglob("*")
                                               if f.is_file()):
            if not (o / rel).is_file() or (o / rel).read_bytes() != (r / rel).read_bytes():
                raise ValueError(f"--tag-from: {o / rel} is missing or differs from {r / rel}")


def missing(runs: list[Path], tags: list[str], sft_eval: str, where: dict[str, list[Path]]) -> Path | None:
    """The first file the table needs that is not there (SFT's evaluation, a tag's summary or test metrics)."""
    need = [r / "eval" / sft_eval for r in runs]
    need += [r / "rl" / t / f for t in tags for r in where.get(t, runs) for f in ("summary.json", "test_metrics.json")]
    return next((f for f in need if not f.is_file()), None)


def alignment(runs: list[Path], tags: list[str], sft_eval: str = "metrics.json",
              where: dict[str, list[Path]] | None = None, suffixes: list[str] | None = None) -> list[str]:
    """The alignment table; ``where[tag]`` = the run dirs holding ``tag`` (default: ``runs``); ``suffixes``: the
    ``--rl-seeds`` replicates pooled into each tag's row."""
    suffixes = suffixes or []
    where = where or {}
    out = ["| policy | checkpoint | valid HR@10 | test HR@10 (3 seeds) | × SFT | test NDCG@10 | sampled "
           "hallucination | vs SFT: +won / −lost, pooled p | vs " + (tags[-1] if len(tags) > 1 else "–")
           + ": +won / −lost, pooled p |", "|---|---|---|---|---|---|---|---|---|"]
    sft = [_ranks(r, None, "", sft_eval) for r in runs]
    sft_valid = _ms([_valid(r, None, '', sft_eval) for r in runs])
    out.append(f"| SFT | best on valid | {sft_valid} | {_ms([s[1] for s in sft])} | 1 "
               f"| {_ms([s[3] for s in sft])} | {_ms([100 * s[2] for s in sft], '.2f')}% | | |")
    for tag in tags:
        at, last = where.get(tag, runs), where.get(tags[-1], runs)
        reps, ref_reps = replicates(at, tag, suffixes), replicates(last, tags[-1], suffixes)
        name = tag + "".join(f" + {t[len(tag):]}" for t in reps[1:])
        for kind, label, ref_kind in _checkpoints(at[0], tag):
            got = [[_ranks(r, t, kind) for t in reps] for r in at]
            ref = (_paired(got, [[_ranks(r, t, ref_kind) for t in ref_reps] for r in last])
                   if tag != tags[-1] else "")
            flat = [g for per_seed in got for g in per_seed]
            valid = "–" if ref_kind != kind else _ms([_valid(r, t, kind) for r in at for t in reps])
            ratio = np.mean([g[1] for g in flat]) / np.mean([s[1] for s in sft])
            out.append(f"| {name} | {label} | {valid} | {_ms([g[1] for g in flat])} | {ratio:.3f}× | "
                       f"{_ms([g[3] for g in flat])} | {_ms([100 * g[2] for g in flat], '.2f')}% | "
                       f"{_paired(got, [[s] for s in sft])} | {ref} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--tags", nargs="*", default=[])
    ap.add_argument("--sft-eval", default="metrics.json", help="the file of <run>/eval with SFT's figures")
    ap.add_argument("--tag-from", nargs="+", action="append", default=[], metavar="TAG RUN",
                    help="read TAG from these run dirs (same split and SFT checkpoint), one per run")
    ap.add_argument("--rl-seeds", nargs="+", default=[], metavar="SUFFIX",
                    help="pool each tag T with T+SUFFIX where it exists (other rl.seed, same SFT checkpoints)")
    a = ap.parse_args()
    where = {}
    for tag, *dirs in a.tag_from:
        where[tag] = [Path(d) for d in dirs]
        try:
            if tag not in a.tags:
                raise ValueError(f"--tag-from: {tag!r} is not one of --tags {a.tags}")
            same_start(a.runs, where[tag])
        except ValueError as e:
            print(f"i17_table: {e}", file=sys.stderr)
            return 2
    tags = [t for tag in a.tags for t in replicates(where.get(tag, a.runs), tag, a.rl_seeds)]
    gone = missing(a.runs, tags, a.sft_eval, {t: where[tag] for tag in where
                                              for t in replicates(where[tag], tag, a.rl_seeds)})
    if gone is not None:
        print(f"i17_table: {gone}: missing (a run not finished, or another --sft-eval / tag)", file=sys.stderr)
        return 2
    if (a.runs[0] / "ranker" / "eval.json").is_file():  # runs without a reward model have no ceilings
        print("\n".join(ceilings(a.runs)) + "\n")
    if a.tags:
        print("\n".join(alignment(a.runs, a.tags, a.sft_eval, where, a.rl_seeds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
