"""The run report: one Markdown file summarising every stage that ran."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from rl_align.config import STAGE_NAMES
from rl_align.eval.significance import paired_hr
from rl_align.rl_report import section
from rl_align.utils.io import read_json, write_text


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _stage_seconds(run: Path) -> dict[str, float]:
    """Seconds of every finished stage, in pipeline order."""

    order = {name: i for i, name in enumerate(STAGE_NAMES)}
    found = sorted(run.glob("*/stage.json"), key=lambda p: (order.get(p.parent.name, len(order)), p.parent.name))
    out = {}
    for p in found:
        info = read_json(p)
        # the rl stage runs once per tag (rl_compare runs several): its marker is the last one run
        name = f"rl (last run: tag {info['tag']})" if p.parent.name == "rl" and "tag" in info else p.parent.name
        out[name] = info.get("seconds", 0.0)
    return out


def _paired_cell(policy_ranks, baseline_ranks) -> str:
    """The SID policy against one baseline on the same users: HR@10 ratio, users only the policy hits / only the
    baseline hits, exact McNemar p; "—" when either side has no per-user ranks or they cover other users. Both rank
    every user of the run's split in split order (:func:`rl_align.eval.evaluate.eval_set`), so equal lengths are the
    same users. The ratio is "—" when the baseline hits nobody."""
    if policy_ranks is None or baseline_ranks is None or len(policy_ranks) != len(baseline_ranks):
        return "—"
    c = paired_hr(baseline_ranks, policy_ranks, 10, n_boot=0)
    ratio = "—" if c["ratio"] != c["ratio"] else f"{c['ratio']:.3f}×"  # NaN: the baseline hits nobody
    return f"{ratio} (+{c['wins']} / −{c['losses']}, p {c['p']:.2g})"


def _baseline_rows(run: Path, part: str, ks: list[str], policy_ranks=None) -> list[str]:
    """Table rows of the item-ID baselines (``baselines/<model>/metrics.json``) on ``part``, each ending with the
    paired comparison of the SID policy (``policy_ranks``: its per-user 0-based ranks of y*) against it."""
    rows = []
    for f in sorted(run.glob("baselines/*/metrics.json")):
        b = read_json(f)
        if part in b:
            rows.append(f"| {b['model']} (item IDs, history {b['max_len']}, best epoch {b['best_epoch']}) | "
                        + " | ".join(f"{b[part]['policy'].get(k, float('nan')):.4f}" for k in ks)
                        + f" | {_paired_cell(policy_ranks, b[part].get('target_rank'))} |")
    return rows


def _data_lines(run: Path, cfg: dict) -> list[str]:
    """The data paragraph (``data/stats.json``)."""
    if not (run / "data" / "stats.json").exists():
        return []
    d = read_json(run / "data" / "stats.json")
    return [f"**Data** {d['name']}: {d['users']} users, {d['items']} items, {d['interactions']} interactions; "
            f"train/valid/test examples {d.get('train_examples')}/{d.get('valid_examples')}/"
            f"{d.get('test_examples')}; history window {d.get('max_history')}.", ""]


def _sid_lines(run: Path, cfg: dict) -> list[str]:
    """The SID paragraph (``sids/stats.json``)."""
    if not (run / "sids" / "stats.json").exists():
        return []
    s = read_json(run / "sids" / "stats.json")
    c = s.get("collisions", {})
    sid = cfg.get("sid", {})
    return [f"**SIDs** {sid.get('tokenizer')} {sid.get('levels')}×{sid.get('codebook_size')}: "
            f"collisions {c.get('before', {}).get('collision_rate', 0):.2%} → "
            f"{c.get('after', {}).get('collision_rate', 0):.2%} ({c.get('method')}), mean code length "
            f"{s['mean_code_length']:.2f}, path entropy {s['path_entropy_bits']:.2f} bits, vocab "
            f"{s.get('vocab_size')}.", ""]


def _sft_lines(run: Path, cfg: dict) -> list[str]:
    """The SFT paragraph and its per-epoch curve (``sft/metrics.jsonl``)."""
    if not (run / "sft" / "metrics.jsonl").exists():
        return []
    recs = [json.loads(line) for line in (run / "sft" / "metrics.jsonl").read_text().splitlines() if line]
    epochs = [r for r in recs if "train_loss" in r]
    if not epochs:
        return []
    last, p, sft = epochs[-1], cfg.get("policy", {}), cfg.get("sft", {})
    lines = [f"**SFT** {p.get('arch')} {p.get('num_layers')}L×{p.get('hidden_size')}d, "
             f"{sft.get('num_workers')} Ray Train worker(s), backend {sft.get('backend')} "
             f"(ZeRO {sft.get('zero_stage')}), seed {sft.get('seed')}: {last['epoch']} epochs, best valid "
             f"NDCG@10 {last['best_valid_ndcg']:.4f} at epoch {last['best_epoch']}, final train loss "
             f"{last['train_loss']:.3f}.", "",
             "| epoch | train loss | valid HR@10 | valid NDCG@10 | train s |", "|---|---|---|---|---|"]
    for r in epochs:
        lines.append(f"| {r['epoch']} | {r['train_loss']:.3f} | {_fmt(r.get('valid_hr@10', '—'))} | "
                     f"{_fmt(r.get('valid_ndcg@10', '—'))} | {r['train_seconds']:.1f} |")
    return lines + [""]


def _eval_part_lines(run: Path, cfg: dict, e: dict, part: str) -> list[str]:
    """One split's table (policy, popularity, baselines), head/tail, validity and list statistics."""
    m = e[part]
    ks = [k for k in m["policy"] if k.startswith(("hr@", "ndcg@"))]
    title = {"cold": "Cold-start items as targets", "cold_valid": "Cold-start items as targets, the cold-valid part "
             "(for choosing settings)"}.get(part, part.capitalize())
    who = "cases" if part.startswith("cold") else "users"
    ce = e.get("cold_expansion")
    how = (f", cold expansion α = {ce['prior']:.4f} over {ce['cold_items']} untrained items" if ce else "")
    ih = e.get("item_head")
    policy = (f"SID policy + item head ({e['stage']}, beam {e['beams']} ∪ head top {ih['union']}, "
              f"β = {ih['beta']:g} on valid)" if ih else f"SID policy ({e['stage']}, beam {e['beams']}, constrained)")
    base = _baseline_rows(run, part, ks, m.get("target_rank"))
    end = " | |" if base else " |"  # the baselines' rows carry one more column: the policy against each of them
    lines = [f"## {title} ({m['n_users']} {who}, full ranking, history "
             f"{'excluded' if e.get('exclude_history') else 'kept'}{how})", "",
             "| model | " + " | ".join(k.upper() for k in ks)
             + (" | SID policy ÷ it, HR@10 (+ users only the policy hits / − only it hits, McNemar p) |" if base else " |"),
             "|---|" + "---|" * (len(ks) + bool(base)),
             f"| {policy} | " + " | ".join(f"{m['policy'][k]:.4f}" for k in ks) + end]
    for key, label in (("policy_beam", "its constrained beam alone"), ("item_head_only", "its item head alone")):
        if key in m:
            lines.append(f"| … {label} | " + " | ".join(f"{m[key][k]:.4f}" for k in ks) + end)
    lines += ["| popularity | " + " | ".join(f"{m['popularity'][k]:.4f}" for k in ks) + end]
    lines += base + [""]
    b, pb, ecfg = m["policy_buckets"], m["popularity_buckets"], cfg.get("eval", {})
    lines += [f"Head/tail (head = most popular {100 * ecfg.get('head_share', 0.2):.0f}% of "
              f"items): policy HR@10 head {b['head'].get('hr@10', 0):.4f} (n={b['head']['n']}), tail "
              f"{b['tail'].get('hr@10', 0):.4f} (n={b['tail']['n']}); popularity head "
              f"{pb['head'].get('hr@10', 0):.4f}, tail {pb['tail'].get('hr@10', 0):.4f}.",
              f"Invalid SIDs under constrained decoding: {m['constrained_invalid_rate']:.2%}; "
              f"hallucination under free beam search: {m['free_hallucination_rate']:.2%}"
              + (f", under free sampling at T = {ecfg.get('free_temperature', 1.0):g}: "
                 f"{m['free_sample_hallucination_rate']:.2%}. "
                 if m.get("free_sample_hallucination_rate") is not None else ". ") +
              f"Decoding {m['decode_seconds']:.1f} s (constrained), {m['free_decode_seconds']:.1f} s (free).",
              ""]
    if "list_lengths" in m:
        ll = m["list_lengths"]
        lines += [f"Ranked lists: {ll[-1]} of {sum(ll)} users got all {len(ll) - 1} slots filled "
                  f"({sum(ll[:10])} fewer than 10 items); seen items ranked: {m['seen_in_lists']}.", ""]
    return lines


def _eval_lines(run: Path, cfg: dict) -> list[str]:
    """The test, valid and cold (and cold-valid) tables of ``eval/metrics.json``."""
    if not (run / "eval" / "metrics.json").exists():
        return []
    e = read_json(run / "eval" / "metrics.json")
    return [line for part in ("test", "valid", "cold", "cold_valid") if part in e
            for line in _eval_part_lines(run, cfg, e, part)]


def _ranker_lines(run: Path, cfg: dict) -> list[str]:
    """The ranker's AUC, discriminability table and reward ceiling (``ranker/eval.json``)."""
    if not (run / "ranker" / "eval.json").exists():
        return []
    r = read_json(run / "ranker" / "eval.json")
    h, names, rk = r["heldout"], r["bucket_names"], cfg.get("ranker", {})
    lines = ["## Ranker reward model", "",
             f"DIN ranker ({rk.get('head')} head, epoch {r.get('ranker_epoch')}) trained on exposure logs: "
             f"held-out AUC {h['heldout_auc']:.4f}, GAUC {h['heldout_gauc']:.4f}. Share of negatives scored "
             f"below the true next item ({r['split']} events), by popularity bucket of the true item "
             "(full table: `ranker/report.md`):", "",
             "| negatives | all | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for kind, tab in r["discriminability"].items():
        lines.append(f"| {kind} | {tab['all']['frac_below']:.3f} | "
                     + " | ".join(f"{tab[n]['frac_below']:.3f}" if n in tab else "–" for n in names) + " |")
    lines.append("")
    rr = r.get("rerank")
    if rr:
        hk = next(k for k in rr["policy"] if k.startswith("hr@"))
        lines += [f"Reward ceiling: re-ranking the SFT policy's top-{rr['beams']} by log π + α · logit r gives "
                  f"{hk.upper()} × {rr['gain']:.3f} at best (α = {rr['best_alpha']:g}; policy alone "
                  f"{rr['policy'][hk]:.4f}, ranker alone {rr['ranker_only'][hk]:.4f}) — how much the "
                  "reward knows beyond the policy on its own candidates.", ""]
    return lines


def _timing_lines(run: Path) -> list[str]:
    """Seconds per finished stage and their total."""
    secs = _stage_seconds(run)
    if not secs:
        return []
    return (["## Timing", "", "| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in secs.items()]
            + [f"| total | {sum(secs.values()):.1f} |", ""])


def write_report(run_path: str | Path) -> Path:
    """Write ``report.md`` into the run dir from the artifacts present (one section per stage that left its
    files); returns its path."""
    run = Path(run_path)
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    lines = [f"# rl-align run `{run.name}`", ""]
    for part in (_data_lines, _sid_lines, _sft_lines, _eval_lines, _ranker_lines):
        lines += part(run, cfg)
    lines += section(run) + _timing_lines(run)
    path = run / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
