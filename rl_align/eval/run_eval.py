"""Evaluate a run's policy (and the popularity baseline) on the leave-one-out split; export predictions."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rl_align.config import EvalConfig
from rl_align.data.cold import split_cold_valid
from rl_align.data.split import train_popularity
from rl_align.eval.cold_expand import (
    ColdIndex,
    ColdRoutes,
    cold_route_items,
    measured_cold_prior,
    rank_with_cold_expansion,
)
from rl_align.eval.evaluate import (
    bucketed,
    eval_set,
    export_predictions,
    hallucination_rate,
    metrics,
    rank_popularity,
    rank_with_engine,
    sampled_hallucination_rate,
    target_ranks,
)
from rl_align.eval.hybrid import BetaChoice, choose_beta, hybrid_rankings
from rl_align.policy.item_head import ItemHead, load_item_head
from rl_align.policy.model import load_policy
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid.buckets import BucketScorer
from rl_align.sid.catalog import SidCatalog
from rl_align.utils.io import load_npz, read_json

log = logging.getLogger("rl_align")

POLICY_DIRS = {"sft": "sft/best_policy", "sft-final": "sft/final_policy"}


def policy_dir(run_path: Path, stage: str) -> Path:
    """The policy directory of ``stage`` in a run: ``sft`` / ``sft-final`` (best / last SFT checkpoint),
    ``rl:<tag>`` / ``rl-final:<tag>`` (best-on-valid / last policy of the alignment run ``<run>/rl/<tag>``)."""
    if stage.startswith(("rl:", "rl-final:")):
        kind, tag = stage.split(":", 1)
        d = Path(run_path) / "rl" / tag / ("best_policy" if kind == "rl" else "final_policy")
        if not d.exists():
            raise FileNotFoundError(f"{d}: no {kind} policy for rl tag {tag!r} in this run (run rl-align rl first)")
        return d
    if stage not in POLICY_DIRS:
        raise ValueError(f"--stage: unknown stage {stage!r}; expected one of {sorted(POLICY_DIRS)}, "
                         "rl:<tag> or rl-final:<tag>")
    d = Path(run_path) / POLICY_DIRS[stage]
    if not d.exists():
        raise FileNotFoundError(f"{d}: no {stage} policy in this run (run the {stage.split('-')[0]} stage first)")
    return d


def evaluate_run(run_path: Path, cfg: EvalConfig, parts: tuple[str, ...] = ("valid", "test"), stage: str = "sft",
                 export: Optional[Path] = None, threads: int = 0, bucket_scorer: Optional[BucketScorer] = None
                 ) -> dict:
    """Metrics of the run's ``stage`` policy and of popularity on ``parts``; optional JSONL export (test).
    ``bucket_scorer`` replaces a bucket catalog's saved within-bucket scorer (e.g. a reward model's; items without
    training interactions keep the saved one in the cold-start mixture, :meth:`Buckets.attach`)."""
    if threads:
        torch.set_num_threads(threads)
    run_path = Path(run_path)
    catalog = SidCatalog.load(run_path / "sids" / "catalog")
    split = split_cold_valid(load_npz(run_path / "data" / "split.npz"), cfg.cold_valid_share, cfg.cold_valid_seed)
    users = read_json(run_path / "data" / "users.json")["user_ids"]
    if bucket_scorer is not None:
        if not catalog.has_buckets:
            raise ValueError(f"{run_path}: a within-bucket scorer needs a bucket catalog (sid.collision: bucket)")
        catalog.buckets.attach(bucket_scorer)

    model = load_policy(policy_dir(run_path, stage), catalog)
    head = load_item_head(policy_dir(run_path, stage), catalog, model.get_input_embeddings().weight.shape[1])
    engine = TorchEngine(model, catalog)
    pop = train_popularity(split, catalog.n_items)
    beams = max(cfg.beams, max(cfg.ks))
    out: dict = {"stage": stage, "policy": str(policy_dir(run_path, stage)), "beams": beams,
                 "exclude_history": cfg.exclude_history}
    if "cold_valid_items" in split:
        out["cold_valid_split"] = {"share": cfg.cold_valid_share, "seed": cfg.cold_valid_seed,
                                   "cold_valid_items": int(split["cold_valid_items"].size),
                                   "cold_items": int(split["cold_items"].size)}
    if catalog.has_buckets and catalog.buckets.scorer is not None:
        scorer = catalog.buckets.scorer
        out["bucket_scorer"] = {"name": scorer.label, "temperature": scorer.temperature,
                                "cold_items_by": (catalog.buckets.cold_scorer or scorer).label}
    cold = None
    if cfg.cold_expansion:
        cold, out["cold_expansion"] = _cold_setup(run_path, cfg, catalog, split, pop)
    hybrid = None
    if head is not None:
        if cold is not None:
            raise ValueError(f"{policy_dir(run_path, stage)}: a policy with an item head cannot be evaluated with "
                             "eval.cold_expansion (new items have untrained head vectors)")
        hybrid = _Hybrid(head, cfg)
        if "valid" not in parts:  # β is chosen on valid: rank it once for that
            es = eval_set(split, "valid")
            hybrid.rank(engine, catalog, es, *rank_with_engine(engine, catalog, es, beams, cfg.exclude_history,
                                                               cfg.batch_size))
        parts = tuple(sorted(parts, key=lambda p: p != "valid"))  # valid first: it chooses β
    for part in parts:
        es = eval_set(split, part)
        out[part], ranked = _part_metrics(engine, catalog, es, cfg, beams, pop, cold, hybrid)
        if part == "test" and export is not None:
            export_predictions(export, ranked, es.users, users, catalog.item_ids, k=max(cfg.ks))
            out[part]["export"] = str(export)
        log.info("eval %s (%s): HR@10 %.4f NDCG@10 %.4f | popularity HR@10 %.4f | free-decoding hallucination %.2f%%",
                 part, stage, out[part]["policy"]["hr@10"], out[part]["policy"]["ndcg@10"],
                 out[part]["popularity"]["hr@10"], 100 * out[part]["free_hallucination_rate"])
    if hybrid is not None:
        out["item_head"] = {"union": cfg.item_head_union, "beta": hybrid.pick.beta, "valid_by_beta": hybrid.pick.valid,
                            "beta_at_edge": hybrid.pick.at_edge}
    return out


def _cold_setup(run_path: Path, cfg: EvalConfig, catalog: SidCatalog, split: dict,
                pop: np.ndarray) -> tuple[tuple, dict]:
    """(ColdIndex, α, (n_items, d) unit item vectors, ColdRoutes or None) of the cold-start expansion, and its
    summary for the metrics."""
    prior = measured_cold_prior(split) if cfg.cold_prior is None else float(cfg.cold_prior)
    if not 0.0 <= prior < 1.0:
        raise ValueError(f"eval.cold_prior must be in [0, 1), got {prior}")
    cold = ColdIndex.build(catalog, cold_route_items(catalog, pop, cfg.bucket_cold_parents))
    vecs = np.load(run_path / "embed" / "item_emb.npy").astype(np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    routes = ColdRoutes.build(catalog, cold) if cfg.cold_routes == "all" else None
    info = {"prior": prior, "cold_items": int((pop == 0).sum()), "parent_route_items": int(cold.is_cold.sum()),
            "parents": len(cold.children), "bucket_cold_parents": bool(cfg.bucket_cold_parents),
            "routes": cfg.cold_routes, "routes_scored": None if routes is None else routes.n}
    log.info("eval: cold expansion over %d items without training interactions (α = %.4f; %d by parent; routes: "
             "%s)", info["cold_items"], prior, info["parent_route_items"],
             cfg.cold_routes if routes is None else f"all {routes.n}, teacher-forced")
    return (cold, prior, vecs, routes), info


@dataclass
class _Hybrid:
    """The item head of the policy under evaluation and the β chosen on valid (:mod:`rl_align.eval.hybrid`)."""

    head: ItemHead
    cfg: EvalConfig
    pick: Optional[BetaChoice] = None  # set by the first split ranked (valid)

    def rank(self, engine: TorchEngine, catalog: SidCatalog, es, ranked: np.ndarray, scores: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
        """The fused ranking (N, B) and the head's own (N, B) of one split from its beam (ranked, scores: (N, B)).
        The first split ranked (valid) tries every β of ``eval.item_head_betas`` and keeps the best."""
        c = self.cfg
        fused, dense = hybrid_rankings(engine.model, self.head, catalog, es, ranked, scores, c.item_head_union,
                                       c.item_head_betas if self.pick is None else [self.pick.beta],
                                       c.exclude_history, c.batch_size)
        if self.pick is None:
            self.pick = pick = choose_beta(fused, es.targets)
            log.info("eval: item head, β = %g chosen on valid (NDCG@10 by β: %s)", pick.beta,
                     ", ".join(f"{b}: {m['ndcg@10']:.4f}" for b, m in pick.valid.items()))
            if pick.at_edge:
                log.warning("eval: item head, β = %g is the largest of eval.item_head_betas: a larger β may rank "
                            "better on valid; widen the grid (the config key, or rl-align eval --item-head-betas "
                            "… %g)", pick.beta, 2 * pick.beta)
        return fused[self.pick.beta], dense


def _part_metrics(engine: TorchEngine, catalog: SidCatalog, es, cfg: EvalConfig, beams: int, pop: np.ndarray,
                  cold: Optional[tuple], hybrid: Optional[_Hybrid] = None) -> tuple[dict, np.ndarray]:
    """Metrics of one split (the constrained ranking, with the cold expansion when ``cold`` is set, fused with the
    item head when ``hybrid`` is set; validity under free decoding; popularity; per-user target ranks; list
    statistics) and the ranked lists (E, beams)."""
    t = time.perf_counter()
    if cold is not None:
        ranked, scores = rank_with_cold_expansion(engine, catalog, es, beams, cfg.exclude_history, cfg.batch_size,
                                                  *cold)
    else:
        ranked, scores = rank_with_engine(engine, catalog, es, beams, cfg.exclude_history, cfg.batch_size)
    invalid = float((ranked[np.isfinite(scores)] < 0).mean())
    extra = {}
    if hybrid is not None:
        beam = ranked
        ranked, dense = hybrid.rank(engine, catalog, es, beam, scores)
        extra = {"policy_beam": metrics(beam, es.targets, cfg.ks), "item_head_only": metrics(dense, es.targets,
                                                                                            cfg.ks)}
    dec_s = time.perf_counter() - t
    t = time.perf_counter()
    halluc = hallucination_rate(engine, catalog, es, cfg.free_beams, cfg.batch_size)
    sampled = (sampled_hallucination_rate(engine, catalog, es, cfg.free_samples, cfg.free_temperature,
                                          cfg.batch_size) if cfg.free_samples else None)
    free_s = time.perf_counter() - t
    pop_ranked = rank_popularity(pop, es, max(cfg.ks), cfg.exclude_history)
    return {
        "n_users": int(es.targets.size),
        "policy": metrics(ranked, es.targets, cfg.ks),
        **extra,  # with an item head: "policy" is the fused ranking, these are the beam's and the head's own
        "policy_buckets": bucketed(ranked, es.targets, pop, cfg.ks, cfg.head_share),
        "popularity": metrics(pop_ranked, es.targets, cfg.ks),
        "popularity_buckets": bucketed(pop_ranked, es.targets, pop, cfg.ks, cfg.head_share),
        "constrained_invalid_rate": invalid,
        "free_hallucination_rate": halluc,
        "free_sample_hallucination_rate": sampled,
        "decode_seconds": dec_s,
        "free_decode_seconds": free_s,
        # per user: 0-based rank of y* in the ranked list, -1 if absent (paired tests between policies)
        "target_rank": target_ranks(ranked, es.targets).tolist(),
        # how many users got lists of each length (index = number of items), and seen items ranked
        "list_lengths": np.bincount((ranked >= 0).sum(1), minlength=beams + 1).tolist(),
        "seen_in_lists": int(((ranked[:, :, None] == es.seen[:, None, :]) & (ranked[:, :, None] >= 0)).sum()),
    }, ranked
