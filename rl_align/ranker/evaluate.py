"""How far the ranker can be trusted, and where: AUC/GAUC on held-out logs, discriminability on unexposed candidates.

*Discriminability*: for each leave-one-out event (user, history → the true next
item y*), the ranker scores y* against negatives it was never shown in that
context — ``random`` (uniform over unseen items), ``popular`` (the most popular
unseen items) and ``policy`` (the SFT policy's own top beam, y* removed: the
rollouts AdaGRPO will ask it to judge). The share of negatives ranked below y*
is reported overall and by the popularity bucket of y*. Exposure bias shows up
as a gap between head and tail buckets.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from rl_align.algos.diagnostics import discriminability
from rl_align.config import EvalConfig, RankerConfig
from rl_align.data.exposure import ExposureLog, exposure_stats, popularity_buckets
from rl_align.data.split import train_popularity
from rl_align.eval.evaluate import eval_set, metrics, rank_with_engine
from rl_align.policy.model import load_policy
from rl_align.ranker.metrics import auc
from rl_align.ranker.model import load_ranker
from rl_align.ranker.train import heldout_metrics, recent_history, score_slates
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import atomic_path, load_npz, read_json, write_json

log = logging.getLogger("rl_align")
BUCKET_NAMES = {3: ["tail", "torso", "head"]}


def _bucket_names(n: int) -> list[str]:
    return BUCKET_NAMES.get(n, [f"b{i}" for i in range(n)])


def sample_random_negatives(seen: np.ndarray, targets: np.ndarray, n_items: int, n: int, seed: int) -> np.ndarray:
    """(E, n) uniform items that are neither seen (E, S; -1 padded) nor the target."""
    rng = np.random.default_rng(seed)
    out = np.empty((targets.size, n), np.int64)
    for e in range(targets.size):
        bad = set(seen[e][seen[e] >= 0].tolist()) | {int(targets[e])}
        if n_items - len(bad) < n:
            raise ValueError(f"event {e}: only {n_items - len(bad)} unseen items for {n} negatives")
        got: list[int] = []
        while len(got) < n:
            for c in rng.integers(n_items, size=2 * n).tolist():
                if c not in bad:
                    bad.add(c)
                    got.append(c)
                    if len(got) == n:
                        break
        out[e] = got
    return out


def popular_negatives(popularity: np.ndarray, seen: np.ndarray, targets: np.ndarray, n: int) -> np.ndarray:
    """(E, n) most popular items that are neither seen nor the target (-1 if the catalog runs out)."""
    order = np.argsort(-popularity, kind="stable")[: n + seen.shape[1] + 1]
    out = np.full((targets.size, n), -1, np.int64)
    for e in range(targets.size):
        bad = set(seen[e][seen[e] >= 0].tolist()) | {int(targets[e])}
        keep = [int(i) for i in order if int(i) not in bad][:n]
        out[e, : len(keep)] = keep
    return out


def policy_beam(run_path: Path, es, beams: int, ecfg: EvalConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """The SFT policy's constrained beam (seen items banned): items (E, beams) best first (-1 = empty) and their
    sequence log-probs (E, beams); None when the run has no policy."""

    pdir = run_path / "sft" / "best_policy"
    if not pdir.exists():
        return None
    catalog = SidCatalog.load(run_path / "sids" / "catalog")
    model = load_policy(pdir, catalog)
    return rank_with_engine(TorchEngine(model, catalog, "cpu"), catalog, es, beams, True, ecfg.batch_size)


def policy_negatives(ranked: np.ndarray, targets: np.ndarray, n: int) -> np.ndarray:
    """(E, n) the first ``n`` items of each beam row (E, B) that are not y*, -1 padded."""
    out = np.full((targets.size, n), -1, np.int64)
    for e in range(targets.size):
        keep = [int(i) for i in ranked[e] if i >= 0 and i != targets[e]][:n]
        out[e, : len(keep)] = keep
    return out


RERANK_ALPHAS = (0.1, 0.3, 1.0, 3.0)


def ranker_logit(ranker_p: np.ndarray) -> np.ndarray:
    """logit of click probabilities (any shape), clipped to [1e-7, 1 − 1e-7] first, in float64."""
    p = np.clip(ranker_p.astype(np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _best_alpha(policy: float, by_alpha: dict[float, float]) -> dict:
    """{"best_alpha", "best", "gain"}: the α whose value beats the policy's most (first on ties; 0 when none does),
    that value, and its ratio to the policy's (NaN when the policy's is 0)."""
    best_a, best = 0.0, policy
    for a, v in by_alpha.items():
        if v > best:
            best_a, best = a, v
    return {"best_alpha": best_a, "best": best, "gain": best / policy if policy > 0 else float("nan")}


def rerank_ceiling(items: np.ndarray, logp: np.ndarray, ranker_p: np.ndarray, targets: np.ndarray,
                   alphas: tuple[float, ...] = RERANK_ALPHAS, ks: tuple[int, ...] = (10,)) -> dict:
    """How much the reward knows that the policy does not, measured on the policy's own candidates.

    Re-rank each row of the policy's beam by ``log π(y|x) + α · logit r(y|x)`` and score HR/NDCG@K against y*.
    That order is the one the KL-regularised RL optimum π* ∝ π · exp(r / β) gives the same candidates (α = 1/β,
    reward = the ranker's logit). If no α beats the policy's own order (α = 0), the ranker adds no information
    where it matters, and a reward built on it is not expected to lift HR@K beyond what more supervised training
    does.

    Args:
        items: (E, B) beam items best first (-1 = empty slot). logp: (E, B) their sequence log-probs.
        ranker_p: (E, B) ranker click probabilities of the same items. targets: (E,) y*.
        alphas: ranker weights tried besides 0 (policy alone) and ∞ (ranker alone).
    Returns:
        {"policy": metrics, "ranker_only": metrics, "alpha": {α: metrics}, "best_alpha": α of the best HR@K_0
        (0 when none beats the policy), "best": that HR@K_0, "gain": best HR@K_0 / policy HR@K_0}.
    """

    logit = ranker_logit(ranker_p)
    empty = items < 0

    def ordered(score: np.ndarray) -> dict:
        score = np.where(empty, -np.inf, score)
        order = np.argsort(-score, axis=1, kind="stable")
        return metrics(np.take_along_axis(items, order, 1), targets, ks)

    k0 = f"hr@{ks[0]}"
    res = {"policy": metrics(items, targets, ks), "ranker_only": ordered(logit),
           "alpha": {float(a): ordered(logp + a * logit) for a in alphas}}
    res.update(_best_alpha(res["policy"][k0], {a: m[k0] for a, m in res["alpha"].items()}))
    return res


def group_update_ceiling(items: np.ndarray, logp: np.ndarray, ranker_p: np.ndarray, group: np.ndarray,
                         targets: np.ndarray, alphas: tuple[float, ...] = RERANK_ALPHAS, k: int = 10) -> dict:
    """The ceiling of one perfect alignment update on a rollout group, for groups that are not the list's head.

    Inside each row's group, log π moves to ``log π + α · logit r`` renormalised to the group's own mass (the
    KL-regularised optimum restricted to the group: the target of ``rl.algo: tilted``); every other candidate keeps
    log π. With the group = the whole list this is :func:`rerank_ceiling` (a constant shift per row).

    Args:
        items: (E, C) candidates (-1 = empty). logp: (E, C) their log π. ranker_p: (E, C) click probabilities.
        group: (E, C) bool, the rollout group's members. targets: (E,) y*.
    Returns:
        {"policy": HR@k of the policy's order, "alpha": {α: HR@k}, "best_alpha", "best", "gain"} as
        :func:`rerank_ceiling`.
    """
    logit = ranker_logit(ranker_p)
    group = group & (items >= 0)
    base = np.where(group, logp, -np.inf)

    def hr(a: float) -> float:
        t = np.where(group, logp + a * logit, -np.inf)
        with np.errstate(invalid="ignore"):
            shift = np.logaddexp.reduce(base, axis=1, keepdims=True) - np.logaddexp.reduce(t, axis=1, keepdims=True)
        score = np.where(items < 0, -np.inf, np.where(group, t + np.nan_to_num(shift, nan=0.0), logp))
        order = np.argsort(-score, axis=1, kind="stable")
        return metrics(np.take_along_axis(items, order, 1), targets, (k,))[f"hr@{k}"]

    res = {"policy": hr(0.0), "alpha": {float(a): hr(a) for a in alphas}}
    res.update(_best_alpha(res["policy"], res["alpha"]))
    return res


def _disc_table(model, users, hist, targets, negs: np.ndarray, buckets: np.ndarray, names: list[str],
                groups: dict[str, np.ndarray]) -> dict:
    cands = np.concatenate([targets[:, None], np.maximum(negs, 0)], 1)
    p = score_slates(model, users, hist, cands)
    mask = torch.from_numpy(negs >= 0)
    d = discriminability(torch.from_numpy(p[:, 0]).double(), torch.from_numpy(p[:, 1:]).double(), mask)
    frac, margin = d.frac_below.numpy(), d.mean_margin.numpy()
    first = (d.rank.numpy() <= 1.0)
    res = {"all": {"events": int(targets.size), "frac_below": float(np.nanmean(frac)),
                   "gt_first": float(first.mean()), "mean_margin": float(np.nanmean(margin))}}
    masks = {name: buckets[targets] == b for b, name in enumerate(names)}
    masks.update(groups)
    for name, m in masks.items():
        if m.any():
            res[name] = {"events": int(m.sum()), "frac_below": float(np.nanmean(frac[m])),
                         "gt_first": float(first[m].mean()), "mean_margin": float(np.nanmean(margin[m]))}
    return res


def evaluate_ranker(run_path: str | Path, cfg: RankerConfig, ecfg: EvalConfig, split: str | None = None,
                    with_policy: bool = True, model: torch.nn.Module | None = None,
                    beam: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Held-out AUC/GAUC (overall and by bucket of the shown item) and discriminability by bucket of y*.

    Args:
        model: the reward model to evaluate (anything with the ranker's call, see
            :mod:`rl_align.rewards.scorers`); default: the run's DIN ranker.
        beam: the policy's (items, log-probs) on ``split`` from :func:`policy_beam` with
            ``cfg.eval_negatives + 1`` beams, to reuse one beam search for several reward models.
    """

    run_path = Path(run_path)
    split = split or cfg.eval_split
    items = read_json(run_path / "data" / "items.json")["item_ids"]
    meta: dict = {}
    if model is None:
        model, meta = load_ranker(run_path / "ranker" / "model", expect_items=items)  # refuses another catalog
    arrays = load_npz(run_path / "data" / "split.npz")
    la = load_npz(run_path / "exposure" / "log.npz")
    pop = train_popularity(arrays, len(items))   # as the logging system saw it
    names = _bucket_names(cfg.popularity_buckets)
    buckets = popularity_buckets(pop, cfg.popularity_buckets)
    res: dict = {"split": split, "ranker_epoch": meta.get("epoch")}
    train_log = ExposureLog.from_arrays(la).subset(~la["heldout"])
    res.update(_heldout_results(model, la, train_log, cfg, buckets, names, pop))
    es = eval_set(arrays, split)
    hist = recent_history(es.history, cfg.max_history)
    negs = {"random": sample_random_negatives(es.seen, es.targets, len(items), cfg.eval_negatives, cfg.seed),
            "popular": popular_negatives(pop, es.seen, es.targets, cfg.eval_negatives)}
    if beam is None and with_policy:
        beam = policy_beam(run_path, es, cfg.eval_negatives + 1, ecfg)
    if beam is not None:
        negs["policy"] = policy_negatives(beam[0], es.targets, cfg.eval_negatives)
        p_beam = score_slates(model, es.users, hist, np.maximum(beam[0], 0))
        n = cfg.eval_negatives + 1
        # HR@n (the whole beam) is the same for every order: the recall the re-ranking works within
        ks = tuple(k for k in (10, 20) if k < n) + (n,)
        res["rerank"] = {"beams": n, **rerank_ceiling(beam[0], beam[1], p_beam, es.targets, ks=ks)}
    res.update(_target_results(model, es, hist, negs, train_log, buckets, names))
    res["bucket_names"] = names
    return res


def _heldout_results(model, la: dict, train_log: ExposureLog, cfg: RankerConfig, buckets: np.ndarray,
                     names: list[str], pop: np.ndarray) -> dict:
    """Held-out impressions: AUC/GAUC, AUC by bucket of the shown item (does the ranker order items it rarely
    saw?) and the exposure statistics of the training part of the logs."""
    out = {"heldout": heldout_metrics(model, la, cfg.max_history)}
    m = la["heldout"]
    p = score_slates(model, la["users"][m], recent_history(la["history"][m], cfg.max_history), la["shown"][m])
    valid = la["shown"][m] >= 0
    sb = buckets[np.maximum(la["shown"][m], 0)]
    out["heldout_auc_by_bucket"] = {name: auc(p[valid & (sb == b)], la["clicks"][m][valid & (sb == b)])
                                    for b, name in enumerate(names)}
    out["exposure"] = exposure_stats(train_log, pop.astype(np.float64), cfg.popularity_buckets)
    return out


def _target_results(model, es, hist: np.ndarray, negs: dict, train_log: ExposureLog, buckets: np.ndarray,
                    names: list[str]) -> dict:
    """Discriminability of y* against each kind of negatives, and how often the logs showed / had clicks on each
    bucket's targets."""
    n_items = buckets.size
    imp = np.bincount(train_log.shown[train_log.shown >= 0], minlength=n_items)
    clk = np.bincount(train_log.shown[train_log.clicks], minlength=n_items)
    groups = {"never clicked in logs": clk[es.targets] == 0, "clicked in logs": clk[es.targets] > 0}
    tb = buckets[es.targets]
    return {"discriminability": {k: _disc_table(model, es.users, hist, es.targets, v, buckets, names, groups)
                                 for k, v in negs.items()},
            "target_exposure": {name: {"mean_impressions": float(imp[es.targets[tb == b]].mean()),
                                       "mean_clicks": float(clk[es.targets[tb == b]].mean()),
                                       "never_clicked": float((clk[es.targets[tb == b]] == 0).mean())}
                                for b, name in enumerate(names) if (tb == b).any()}}


def ranker_report(res: dict) -> str:
    """Markdown summary of :func:`evaluate_ranker`."""
    names = res["bucket_names"]
    h = res["heldout"]
    lines = ["# Ranker evaluation", "",
             f"Held-out impressions: AUC **{h['heldout_auc']:.4f}**, GAUC **{h['heldout_gauc']:.4f}** "
             f"({h['heldout_gauc_users']} users with a click and a non-click), log-loss {h['heldout_logloss']:.4f}, "
             f"{h['heldout_clicks']} clicks in {h['heldout_slots']} slots.", "",
             "Held-out AUC by popularity bucket of the shown item: "
             + ", ".join(f"{n} {res['heldout_auc_by_bucket'][n]:.4f}" for n in names) + ".", "",
             "## Exposure bias in the training logs", "",
             "| bucket | items | share of interactions | share of impressions | share of clicks | items ever clicked |",
             "|---|---|---|---|---|---|"]
    for b, row in zip(names, res["exposure"]["buckets"]):
        lines.append(f"| {b} | {row['items']} | {row['share_of_interactions']:.3f} | {row['share_of_impressions']:.3f}"
                     f" | {row['share_of_clicks']:.3f} | {row['items_ever_clicked']:.3f} |")
    lines += ["", f"Impressions: {res['exposure']['impressions']}, CTR {res['exposure']['ctr']:.4f}, exposure Gini "
              f"{res['exposure']['exposure_gini']:.3f}.", "",
              f"## Discriminability on unexposed candidates ({res['split']} events)", "",
              "Share of negatives the ranker scores below the true next item (1.0 = perfect, 0.5 = chance), "
              "by popularity bucket of the true item:", "",
              "| negatives | all | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for kind, tab in res["discriminability"].items():
        cells = [f"{tab['all']['frac_below']:.3f}"] + [f"{tab[n]['frac_below']:.3f} (n={tab[n]['events']})"
                                                         if n in tab else "–" for n in names]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    g = ["never clicked in logs", "clicked in logs"]
    lines += ["", "The same, split by whether the true item ever got a click in the training logs (exposure bias):",
              "", "| negatives | " + " | ".join(g) + " |", "|---|" + "---|" * len(g)]
    for kind, tab in res["discriminability"].items():
        lines.append(f"| {kind} | " + " | ".join(f"{tab[n]['frac_below']:.3f} (n={tab[n]['events']})" if n in tab
                                                  else "–" for n in g) + " |")
    lines += ["", "Training-log exposure of the true items: "
              + "; ".join(f"{n}: {v['mean_impressions']:.0f} impressions, {v['mean_clicks']:.1f} clicks, "
                          f"{100 * v['never_clicked']:.0f}% never clicked" for n, v in res["target_exposure"].items())
              + ".", ""]
    lines += rerank_lines(res)
    return "\n".join(lines)


def rerank_lines(res: dict) -> list[str]:
    """Markdown table of :func:`rerank_ceiling` (empty when the evaluation ran without the policy)."""
    rr = res.get("rerank")
    if not rr:
        return []
    ks = [k for k in rr["policy"] if k.startswith(("hr@", "ndcg@"))]
    lines = [f"## Reward ceiling: the policy's top-{rr['beams']} re-ranked by log π + α · logit r ({res['split']} "
             "events)", "",
             "Does the ranker know anything the policy does not, on the policy's own candidates? This is the order "
             "the KL-regularised RL optimum π·exp(r/β) gives them (α = 1/β). If no α > 0 beats α = 0, a reward built "
             "on this ranker is not expected to lift HR@K beyond more supervised training.", "",
             "| order | " + " | ".join(k.upper() for k in ks) + " |", "|---|" + "---|" * len(ks)]
    rows = [("policy (α = 0)", rr["policy"])] + [(f"α = {float(a):g}", m) for a, m in rr["alpha"].items()]
    rows.append(("ranker alone (α = ∞)", rr["ranker_only"]))
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in ks) + " |")
    lines += ["", f"Best α = {rr['best_alpha']:g}: {ks[0].upper()} × {rr['gain']:.3f} over the policy's own order.", ""]
    return lines


def write_ranker_eval(run_path: str | Path, res: dict, name: str = "din") -> Path:
    """``ranker/eval.json`` + ``report.md`` (the DIN ranker on test), else ``eval[_<name>][_<split>].json`` and
    ``report[_<name>][_<split>].md`` (a valid evaluation does not overwrite the test one)."""
    d = Path(run_path) / "ranker"
    sfx = ("" if name == "din" else f"_{name}") + ("" if res.get("split", "test") == "test" else f"_{res['split']}")
    write_json(d / f"eval{sfx}.json", res)

    with atomic_path(d / f"report{sfx}.md") as tmp:
        Path(tmp).write_text(ranker_report(res), encoding="utf-8")
    return d / f"report{sfx}.md"
