"""The pipeline's stages (data → embed → sids), each writing into the run directory.

Each stage is a function ``(RunDir) -> dict`` that reads the previous stages'
artifacts from disk, so stages can run alone, in another process, or on resume.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from rl_align.baselines.train import load_baseline, train_and_evaluate
from rl_align.checks import check_config
from rl_align.config import STAGE_NAMES, RunConfig, own_baseline
from rl_align.data import leave_one_out, load_dataset
from rl_align.data.cold import choose_cold_items, cold_start_split
from rl_align.data.exposure import exposure_stats, load_exposure_jsonl, simulate_exposure
from rl_align.data.fetch import cache_root
from rl_align.data.split import train_popularity, training_pairs
from rl_align.data.stats import dataset_stats
from rl_align.driver.controller import run_rl
from rl_align.embed import embed_items
from rl_align.embed.collaborative import blend, cf_vectors, fill_from_neighbours
from rl_align.eval.run_eval import evaluate_run
from rl_align.report import write_report
from rl_align.retrieval.evaluate import evaluate_retrieval
from rl_align.retrieval.train import train_retrieval
from rl_align.rewards.scorers import evaluate_scorers, train_scorers
from rl_align.run_dir import RunDir, config_digest, resume_view
from rl_align.sft.distill import teacher_targets
from rl_align.sft.driver import run_sft
from rl_align.sid import SidCatalog, build_tokenizer, resolve_collisions
from rl_align.sid.buckets import build_scorer
from rl_align.sid.stats import format_stats, sid_stats
from rl_align.sid.user_tokens import UserTokens
from rl_align.utils.io import load_npz, read_json, write_json, write_npy, write_npz

log = logging.getLogger("rl_align")


# --------------------------------------------------------------------------- data
def stage_data(run: RunDir) -> dict:
    """Load the dataset, split leave-one-out, write ``data/`` (items, users, split arrays, stats)."""

    cfg = run.cfg.data
    data = load_dataset(cfg)
    cold = None
    if cfg.cold_share > 0:
        items = choose_cold_items(data.item_popularity(), cfg.cold_share, run.cfg.eval.head_share, cfg.cold_seed)
        data, cold = cold_start_split(data, items, cfg.max_history)
        cold["items"] = items
        log.info("data: cold-start protocol — %d tail items held out of training, %d cold-start cases",
                 items.size, cold["targets"].size)
    split = leave_one_out(data, cfg.max_history)
    d = run.stage_dir("data")
    arrays = {"seq_items": split.seq_items, "seq_offsets": split.seq_offsets,
              "item_popularity": data.item_popularity()}
    if cold is not None:
        arrays.update({f"cold_{k}": v for k, v in cold.items()})
    for part in ("train", "valid", "test"):
        ex = getattr(split, part)
        for f in ("users", "targets", "history", "history_len", "positions"):
            arrays[f"{part}_{f}"] = getattr(ex, f)
    write_npz(d / "split.npz", **arrays)
    write_json(d / "items.json", {"item_ids": data.item_ids, "item_text": data.item_text})
    write_json(d / "users.json", {"user_ids": data.user_ids, "user_features": data.user_features})
    if data.item_embeddings is not None:
        write_npy(d / "dataset_item_embeddings.npy", data.item_embeddings)
    stats = dataset_stats(data, split)
    if cold is not None:
        stats.update(cold_items=int(cold["items"].size), cold_cases=int(cold["targets"].size))
    write_json(d / "stats.json", stats)
    log.info("data: %s — %d users, %d items, %d interactions; train/valid/test = %d/%d/%d examples",
             data.name, data.n_users, data.n_items, data.n_interactions, len(split.train), len(split.valid),
             len(split.test))
    return {"stats": stats}


def load_items(run_path: Path) -> dict:
    """``data/items.json`` of a run."""
    return read_json(Path(run_path) / "data" / "items.json")


def load_split_arrays(run_path: Path) -> dict[str, np.ndarray]:
    """``data/split.npz`` of a run as a dict of arrays."""
    return load_npz(Path(run_path) / "data" / "split.npz")


# --------------------------------------------------------------------------- embed
def stage_embed(run: RunDir) -> dict:
    """Item vectors → ``embed/item_emb.npy``."""
    e = run.cfg.embed

    items = load_items(run.path)
    provided = None
    p = run.path / "data" / "dataset_item_embeddings.npy"
    if run.cfg.embed.source == "dataset" and p.exists():
        provided = np.load(p, allow_pickle=False)
    t = time.perf_counter()
    emb, info = embed_items(items["item_text"], run.cfg.embed, cache_root(run.cfg.data.cache_dir), provided)
    if run.cfg.embed.cf_dim > 0:
        split = load_split_arrays(run.path)
        it, us = training_pairs(split["seq_items"], split["seq_offsets"])
        cf = cf_vectors(it, us, emb.shape[0], split["seq_offsets"].size - 1, e.cf_dim, run.cfg.seed)
        cf, filled = fill_from_neighbours(emb, cf, e.cf_fill_neighbours)
        emb = blend(emb, cf, e.cf_weight)
        info.update({"cf_dim": e.cf_dim, "cf_weight": e.cf_weight, "cf_items_filled_from_text_neighbours": filled})
    d = run.stage_dir("embed")
    write_npy(d / "item_emb.npy", emb)
    info.update({"n_items": int(emb.shape[0]), "dim": int(emb.shape[1]), "seconds": time.perf_counter() - t})
    write_json(d / "info.json", info)
    log.info("embed: %d items → %d-d (%s, cache %s)", emb.shape[0], emb.shape[1], info["source"],
             info.get("cache", "n/a"))
    return info


# --------------------------------------------------------------------------- sids
def stage_sids(run: RunDir) -> dict:
    """Fit the tokenizer, resolve collisions, write ``sids/`` (tokenizer, catalog, stats)."""

    cfg = run.cfg.sid
    src = run.path / ("retrieval/item_view.npy" if cfg.vectors == "retrieval" else "embed/item_emb.npy")
    if not src.exists():
        raise FileNotFoundError(f"{src}: sid.vectors: {cfg.vectors} needs it (run the {cfg.vectors} stage first)")
    emb = np.load(src, allow_pickle=False)
    items = load_items(run.path)

    # training counts only: the valid/test events must not reach the tokenizer (SA²CRQ's head/tail split)
    pop = train_popularity(load_split_arrays(run.path), emb.shape[0])
    t = time.perf_counter()
    tok = build_tokenizer(cfg)
    codes = tok.fit_encode(emb, pop)
    fit_s = time.perf_counter() - t
    resolved, report = resolve_collisions(codes, cfg.collision, tok, emb, cfg.bucket_cap)
    stats = sid_stats(resolved, pop)
    stats["collisions"] = report
    stats["fit_encode_seconds"] = fit_s
    if getattr(tok, "anchor_stats", None):
        stats["tail_anchoring"] = tok.anchor_stats
    d = run.stage_dir("sids")
    tok.save(d / "tokenizer")
    bucket = cfg.collision == "bucket"
    catalog = SidCatalog(items["item_ids"], resolved, stats, buckets=bucket,
                         bucket_scorer=build_scorer(cfg.bucket_scorer, pop, emb, cfg.bucket_temperature)
                         if bucket else None, user_tokens=_user_tokens(run), history_items=cfg.history == "items")
    stats["vocab_size"] = catalog.vocab_size
    stats["trie_bytes"] = catalog.trie.nbytes()
    catalog.save(d / "catalog")
    write_json(d / "stats.json", stats)
    log.info("sids: %s %d×%d, fit+encode %.1fs\n%s", cfg.tokenizer, cfg.levels, cfg.codebook_size, fit_s,
             format_stats(stats))
    return {"collision_rate_before": report["before"]["collision_rate"],
            "collision_rate_after": report["after"]["collision_rate"]}


def _user_tokens(run: RunDir) -> UserTokens | None:
    """``sid.user_tokens`` encoded from ``data/users.json`` (None when the list is empty)."""
    names = run.cfg.sid.user_tokens
    if not names:
        return None
    users = read_json(run.path / "data" / "users.json")
    return UserTokens.fit(list(names), users["user_features"], len(users["user_ids"]))


# --------------------------------------------------------------------------- sft
def _baseline_source(run: RunDir, src: str | None, own: str | None) -> str | None:
    """A config's item-ID model source as a path: ``baseline:<own>`` → this run's ``baselines/<own>``."""
    return str(run.path / "baselines" / own) if own is not None else src


def _item_token_vectors(run: RunDir) -> np.ndarray | None:
    """(n_items, d) item vectors named by ``sft.item_token_init`` (a baseline's item table, or an .npy), or None."""
    src = _baseline_source(run, run.cfg.sft.item_token_init, run.cfg.sft.item_token_baseline)
    if src is None:
        return None
    if src.endswith(".npy"):
        return np.load(src, allow_pickle=False)
    return load_baseline(src).item_emb.weight[1:].detach().numpy()  # row 0 is padding


def _distill_teacher(run: RunDir) -> dict | None:
    """The top-K next items of ``sft.distill_from`` (with ``sft.distill_bag``, of the bag) for every training event
    (:func:`teacher_targets`), or None."""
    s = run.cfg.sft
    srcs = [_baseline_source(run, src, own_baseline(src)) for src in s.distill_sources]
    if not srcs:
        return None
    t0 = time.perf_counter()
    out = teacher_targets([load_baseline(src) for src in srcs], load_npz(run.path / "data" / "split.npz"),
                          s.distill_topk, s.distill_temperature)
    log.info("sft: teacher targets from %s for %d training events in %.1fs", " + ".join(srcs),
             int((out["prob"].sum(1) > 0).sum()), time.perf_counter() - t0)
    return out


def stage_sft(run: RunDir) -> dict:
    """Train the SID policy with NLL (plus distillation from an item-ID teacher when ``sft.distill_from``) on Ray
    Train (DeepSpeed or DDP workers); best policy → ``sft/best_policy``."""

    out = run_sft(run.cfg, run.path, item_vectors=_item_token_vectors(run), teacher=_distill_teacher(run))
    numbers = {k: v for k, v in out["metrics"].items() if isinstance(v, (int, float))}
    return {"best_policy": out["best_policy"], **numbers}


# --------------------------------------------------------------------------- exposure + ranker
def stage_exposure(run: RunDir) -> dict:
    """Impression logs for the ranker: simulated from the training split, or loaded (``exposure.logs_path``)."""

    cfg = run.cfg.exposure
    arrays = load_split_arrays(run.path)
    items = load_items(run.path)["item_ids"]
    if cfg.logs_path:
        users = read_json(run.path / "data" / "users.json")["user_ids"]
        log_ = load_exposure_jsonl(cfg.logs_path, {u: k for k, u in enumerate(users)},
                                   {i: k for k, i in enumerate(items)}, run.cfg.data.max_history, cfg.holdout_events)
    else:
        log_ = simulate_exposure(arrays, len(items), cfg, run.cfg.data.max_history)
    d = run.stage_dir("exposure")
    write_npz(d / "log.npz", **log_.arrays())
    stats = exposure_stats(log_, arrays["item_popularity"].astype(np.float64), run.cfg.ranker.popularity_buckets)
    write_json(d / "stats.json", stats)
    log.info("exposure: %d impressions, %d clicks (CTR %.4f); impressions share tail/…/head = %s",
             stats["impressions"], stats["clicks"], stats["ctr"],
             "/".join(f"{b['share_of_impressions']:.2f}" for b in stats["buckets"]))
    return {"impressions": stats["impressions"], "clicks": stats["clicks"], "ctr": stats["ctr"]}


def stage_ranker(run: RunDir) -> dict:
    """Train the ranker on the exposure logs (Ray Train) and the other reward models of ``ranker.scorers``, then
    evaluate each (``ranker/eval[_<name>].json``, ``report[_<name>].md``; with several, one policy beam search
    and the reward-ceiling table ``ranker/ceilings_<split>.md``)."""

    cfg = run.cfg
    out = train_scorers(run.path, cfg)["din"]  # the DIN ranker on Ray Train first, then the others
    results = evaluate_scorers(run.path, cfg, cfg.ranker.scorers, cfg.ranker.eval_split)
    res = results["din"]
    log.info("ranker: held-out AUC %.4f GAUC %.4f; report %s", res["heldout"]["heldout_auc"],
             res["heldout"]["heldout_gauc"], run.path / "ranker" / "report.md")
    summary = {"model": out["model"], "heldout_auc": res["heldout"]["heldout_auc"],
               "heldout_gauc": res["heldout"]["heldout_gauc"]}
    for name, r in results.items():
        if name != "din":
            summary[f"{name}_heldout_auc"] = r["heldout"]["heldout_auc"]
        if r.get("rerank"):
            summary[f"{name}_ceiling_gain"] = r["rerank"]["gain"]
    return summary


# --------------------------------------------------------------------------- rl
def stage_rl(run: RunDir) -> dict:
    """Align the SFT policy on Ray (rollout workers, reward actors, DeepSpeed learners), then evaluate the
    best-on-valid and final policies on test → ``rl/<tag>/{summary,test_metrics}.json``."""

    summary = run_rl(run.cfg, run.path)
    tag = run.cfg.rl.out_tag()
    res = {}
    for kind in ("rl", "rl-final"):
        res[kind] = evaluate_run(run.path, run.cfg.eval, ("test",), f"{kind}:{tag}")
    write_json(run.path / "rl" / tag / "test_metrics.json", res)
    best, final = res["rl"]["test"]["policy"], res["rl-final"]["test"]["policy"]
    log.info("rl %s: test HR@10 best %.4f final %.4f", tag, best["hr@10"], final["hr@10"])
    return {"tag": tag, "best_step": summary["best_step"], "test_hr@10_best": best["hr@10"],
            "test_hr@10_final": final["hr@10"], "test_ndcg@10_best": best["ndcg@10"]}


# --------------------------------------------------------------------------- eval + report
def stage_eval(run: RunDir) -> dict:
    """Test/valid metrics of the best SFT policy and of popularity; predictions → ``eval/predictions_test.jsonl``."""

    d = run.stage_dir("eval")
    parts = ("valid", "test") + (("cold",) if run.cfg.data.cold_share > 0 else ()) \
        + (("cold_valid",) if run.cfg.eval.cold_valid_share > 0 else ())
    res = evaluate_run(run.path, run.cfg.eval, parts, export=d / "predictions_test.jsonl")
    write_json(d / "metrics.json", res)
    return {"test_hr@10": res["test"]["policy"]["hr@10"], "test_ndcg@10": res["test"]["policy"]["ndcg@10"]}


def stage_baselines(run: RunDir) -> dict:
    """Item-ID baselines (``baseline.models``: SASRec, GRU4Rec) on the same split and evaluator as the policy."""

    run.stage_dir("baselines")
    out = {}
    for name in run.cfg.baseline.models:
        res = train_and_evaluate(run.path, name, run.cfg.baseline, run.cfg.eval, run.cfg.data.max_history)
        out[f"{name}_test_hr@10"] = res["test"]["policy"]["hr@10"]
        out[f"{name}_test_ndcg@10"] = res["test"]["policy"]["ndcg@10"]
    return out


def stage_retrieval(run: RunDir) -> dict:
    """SCI dual tower on Ray Train, then exact / IVF-PQ / dual-view search on valid and test (``retrieval/``)."""

    run.stage_dir("retrieval")
    train_retrieval(run.cfg, run.path)
    res = evaluate_retrieval(run.cfg, run.path)
    exact = res["test"][0]
    return {f"retrieval_test_{k}": exact[k] for k in ("hr@10", "hr@50", "hr@100", "ndcg@10")}


def stage_report(run: RunDir) -> dict:
    """A Markdown report of the run (``report.md``): metrics table, baseline, timings."""

    path = write_report(run.path)
    log.info("report: %s", path)
    return {"report": str(path)}


def _sid_inputs(c: RunConfig) -> dict:
    """Config digests the SIDs depend on: data, embed and sid, and the SCI retriever when it supplies the vectors."""
    out = {k: config_digest(getattr(c, k)) for k in ("data", "embed", "sid")}
    if c.sid.vectors == "retrieval":
        out["retrieval"] = config_digest(c.retrieval)
        out["seed"] = c.seed
    return out


STAGES: dict[str, tuple[Callable[[RunDir], dict], Callable[[RunConfig], object]]] = {
    # stage name → (function, the config a finished stage's digest covers: a change re-runs it and later stages)
    "data": (stage_data, lambda c: {"data": config_digest(c.data)}),
    # the collaborative view's randomised SVD is seeded by the run's seed
    "embed": (stage_embed, lambda c: {"data": config_digest(c.data), "embed": config_digest(c.embed),
                                      **({"cf_seed": c.seed} if c.embed.cf_dim > 0 else {})}),
    "sids": (stage_sids, lambda c: _sid_inputs(c)),
    # item-token embeddings initialised from this run's baseline depend on how it was trained
    "sft": (stage_sft, lambda c: {**_sid_inputs(c), "policy": config_digest(c.policy),
                                  "sft": config_digest(c.sft), "eval": config_digest(c.eval),
                                  **({"baseline": config_digest(c.baseline)} if c.sft.item_token_baseline else {})}),
    "eval": (stage_eval, lambda c: {**_sid_inputs(c), **{k: config_digest(getattr(c, k))
                                                         for k in ("policy", "sft", "eval")}}),
    "baselines": (stage_baselines, lambda c: {k: config_digest(getattr(c, k)) for k in ("data", "baseline", "eval")}),
    "retrieval": (stage_retrieval, lambda c: {k: config_digest(getattr(c, k)) for k in ("data", "embed",
                                                                                       "retrieval")}),
    "exposure": (stage_exposure, lambda c: {"data": config_digest(c.data), "exposure": config_digest(c.exposure)}),
    # policy negatives in the ranker's evaluation come from the SFT policy when the run has one
    # sequence reward models (ranker.scorers beyond din) are trained with the baseline section's settings
    "ranker": (stage_ranker, lambda c: {k: config_digest(getattr(c, k)) for k in
                                        ("data", "exposure", "ranker") + (("baseline",) if len(c.ranker.scorers) > 1
                                                                          else ())}),
    "rl": (stage_rl, lambda c: {**_sid_inputs(c), **{k: config_digest(getattr(c, k))
                                                     for k in ("policy", "sft", "exposure", "ranker", "reward", "rl",
                                                               "eval")}}),
    # the report is cheap and reflects every stage: always rewritten
    "report": (stage_report, lambda c: {"always": time.time()}),
}
assert tuple(STAGES) == STAGE_NAMES, "rl_align.config.STAGE_NAMES lists the stages in this order"


def _upstream(c: RunConfig, stages: tuple[str, ...]) -> dict:
    return {s: config_digest(STAGES[s][1](c)) for s in stages}


def _rl_dir(c: RunConfig) -> str:
    return f"rl/{c.rl.out_tag()}"


# Stages that resume from their own checkpoints: (directory under the run, checkpoint paths in it, resume
# fingerprint). A checkpoint is resumed only when everything it was trained from is unchanged — upstream stages and
# the stage's own model/data settings; its schedule and resources may change (a longer schedule continues). Without
# this, a run re-pointed at another seed or catalog would "resume" an SFT trained on other SIDs.
RESUMABLE: dict[str, tuple[Callable[[RunConfig], str], tuple[str, ...], Callable[[RunConfig], dict]]] = {
    "sft": (lambda c: "sft", ("ray_train",), lambda c: {
        **_upstream(c, ("data", "embed", "sids")), "policy": config_digest(c.policy),
        "sft": resume_view(c.sft)}),
    "ranker": (lambda c: "ranker", ("ray_train",), lambda c: {
        **_upstream(c, ("data", "exposure")),
        "ranker": resume_view(c.ranker)}),
    "retrieval": (lambda c: "retrieval", ("ray_train",), lambda c: {
        **_upstream(c, ("data", "embed")), "retrieval": resume_view(c.retrieval)}),
    # the controller checks the rl/reward part itself (and refuses with a clear message); here: what it starts from
    "rl": (_rl_dir, ("checkpoints",), lambda c: _upstream(c, ("data", "embed", "sids", "sft", "exposure", "ranker"))),
}


def guard_checkpoints(run: RunDir, name: str) -> None:
    """Before ``name`` runs: if its directory holds checkpoints recorded as made from other inputs, remove the
    directory so the stage starts fresh; then record the current fingerprint. Checkpoints without a record (run
    directories from before records were kept) are resumed as before, with a warning."""
    if name not in RESUMABLE:
        return
    where, ckpts, scope = RESUMABLE[name]
    d = run.path / where(run.cfg)
    fp = config_digest(scope(run.cfg))
    rec = d / "resume_fingerprint.json"
    old = read_json(rec).get("fingerprint") if rec.exists() else None
    has_ckpt = any((d / c).exists() for c in ckpts)
    if has_ckpt and old is None:
        log.warning("%s: checkpoints in %s carry no record of the inputs they were made from (an older run "
                    "directory); resuming them as they are", name, d)
    elif has_ckpt and old != fp:
        log.warning("%s: checkpoints in %s were made from other inputs (an upstream stage, the seed or the model "
                    "settings changed): removing them, starting fresh", name, d)
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    write_json(rec, {"fingerprint": fp})


def run_pipeline(cfg: RunConfig, run_path: Path, resume: bool = True) -> dict:
    """Run ``cfg.stages`` in order in ``run_path``; finished stages with an unchanged config are skipped."""
    check_config(cfg)
    run = RunDir(run_path, cfg)
    run.write_config()
    results: dict = {}
    for name in cfg.stages:
        fn, scope = STAGES[name]
        digest = config_digest(scope(cfg))
        if resume and run.is_done(name, digest):
            log.info("%s: already done (resume), skipping", name)
            results[name] = read_json(run.path / name / "stage.json")
            continue
        guard_checkpoints(run, name)
        t = time.perf_counter()
        info = fn(run)
        secs = time.perf_counter() - t
        run.mark_done(name, digest, info, secs)
        run.append_metrics({"stage": name, "seconds": secs, **{k: v for k, v in info.items() if k != "stats"}})
        results[name] = info
    return results
