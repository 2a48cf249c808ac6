"""Pool ``rl-align analyze strata`` over runs that are seeds of one setup (issue 17: 3 SFT seeds).

Each run bins its own prompts by its own quantiles, so the bin *edges* differ between runs; the bin *index*
(difficulty tercile i × discriminability tercile j) is what is pooled. Every per-prompt mean of a cell (Δ log π(y*),
Δ hit@k under each update, the gate's admission …) is averaged over runs weighted by the cell's prompts, and so are
the gate-on / gate-off summaries (weighted by each run's admitted / refused prompts). Runs whose strata used other
settings (diagnostics, gate, steps, updates, reward, rollouts) or another number of bins are refused in one line.
The table and heatmaps are ``rl_align.analysis.strata``'s own, with bins named by their index (1 = lowest).

    python experiments/strata_pool.py runs/i17m-s{0,1,2} [--out DIR]   # the table; DIR gets strata.{json,md,png}
    … --name strata_faulty-negate    # strata of a faulty reward (reward.fault_*): the segments are pooled too
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rl_align.analysis.strata import heatmaps, strata_markdown  # noqa: E402

#: strata.json fields that must agree for runs to be pooled
SAME = ("difficulty", "discriminability", "gate_config", "steps", "k", "quantiles", "algos", "reward",
        "rollout_mode", "lr", "prompts_per_step")


def _wmean(pairs: list[tuple[float, float]]) -> float | None:
    """Σ w·v / Σ w over (value, weight) pairs with w > 0 and a value; None when there is no weight."""
    pairs = [(v, w) for v, w in pairs if w > 0 and v is not None]
    tot = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / tot if tot else None


def pool(results: list[dict]) -> dict:
    """The runs' ``strata.json`` dicts → one dict of the same shape (cells by bin index; labels of every run)."""
    first = results[0]
    for r in results[1:]:
        for k in SAME:
            if r.get(k) != first.get(k):
                raise ValueError(f"{r['run']}: strata {k} = {r.get(k)!r}, but {first['run']} has {first.get(k)!r}")
    keys = [k for k in first["cells"][0] if k not in ("difficulty_bin", "disc_bin", "n")]
    by_cell: dict[tuple[int, int], list[dict]] = {}
    for r in results:
        for c in r["cells"]:
            by_cell.setdefault((c["difficulty_bin"], c["disc_bin"]), []).append(c)
    cells = [{"difficulty_bin": i, "disc_bin": j, "n": sum(c["n"] for c in cs),
              **{k: _wmean([(c[k], c["n"]) for c in cs]) for k in keys}} for (i, j), cs in sorted(by_cell.items())]
    side = {}
    for name, share in (("gate_on", lambda r: r["admitted"]), ("gate_off", lambda r: 1 - r["admitted"])):
        side[name] = {k: _wmean([(r[name].get(k), share(r) * r["prompts"]) for r in results]) for k in first[name]}
    n = sum(r["prompts"] for r in results)
    fault = pool_fault(results) if "fault" in first else {}
    nd, nc = (max(c[k] for c in cells) + 1 for k in ("difficulty_bin", "disc_bin"))
    return {**{k: first[k] for k in SAME}, "runs": [r["run"] for r in results], "prompts": n,
            "admitted": sum(r["admitted"] * r["prompts"] for r in results) / n,
            "difficulty_bins": [str(i + 1) for i in range(nd)], "disc_bins": [str(j + 1) for j in range(nc)],
            "bins_by_run": {r["run"]: [r["difficulty_bins"], r["disc_bins"]] for r in results}, "cells": cells, **side,
            **fault}


def pool_fault(results: list[dict]) -> dict:
    """The faulty reward's segments pooled: admission weighted by the segment's prompts, the gate sides by its
    admitted / refused prompts."""
    first = results[0]["fault"]
    for r in results[1:]:
        f = r.get("fault") or {}
        if (f.get("share"), f.get("kind")) != (first["share"], first["kind"]):
            raise ValueError(f"{r['run']}: strata fault = {f.get('share')!r} {f.get('kind')!r}, but "
                             f"{results[0]['run']} has {first['share']!r} {first['kind']!r}")
    segs = {}
    for name in first["segments"]:
        rows = [r["fault"]["segments"][name] for r in results]
        w = {"all": lambda s: s["prompts"], "gate_on": lambda s: s["prompts"] * (s["admitted"] or 0),
             "gate_off": lambda s: s["prompts"] * (1 - (s["admitted"] or 0))}
        segs[name] = {"prompts": sum(s["prompts"] for s in rows),
                      "admitted": _wmean([(s["admitted"], s["prompts"]) for s in rows]),
                      **{part: {k: _wmean([(s[part].get(k), w[part](s)) for s in rows]) for k in rows[0][part]}
                         for part in w}}
    return {"fault": {"share": first["share"], "kind": first["kind"], "segments": segs}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="runs with analysis/strata/strata.json")
    ap.add_argument("--out", type=Path, help="also write strata.json, strata.md and the heatmaps strata.png here")
    ap.add_argument("--name", default="strata", help="the folder under analysis/ (strata_faulty-<kind> for a faulty "
                                                     "reward)")
    a = ap.parse_args(argv)
    try:
        missing = [r for r in a.runs if not (r / "analysis" / a.name / "strata.json").is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}/analysis/{a.name}/strata.json: missing (run rl-align analyze "
                                    "strata)")
        p = pool([json.loads((r / "analysis" / a.name / "strata.json").read_text()) for r in a.runs])
    except (ValueError, FileNotFoundError) as e:
        print(f"strata_pool: {e}", file=sys.stderr)
        return 2
    md = strata_markdown(p)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "strata.json").write_text(json.dumps(p, indent=1))
        (a.out / "strata.md").write_text(md)
        heatmaps(p, a.out / "strata.png")
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
