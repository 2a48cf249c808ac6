"""Whole-config checks that need the registries: every registered name a config gives, and each objective's rules.

:func:`rl_align.config.load_config` checks types, ranges (field metadata) and each section's cross-field rules;
this module adds what only the filled registries know, so ``rl-align config CONFIG``, the CLI and
:func:`rl_align.pipeline.run_pipeline` refuse a config that cannot finish before any stage starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

from rl_align.algos import OBJECTIVES
from rl_align.baselines import BASELINES
from rl_align.config import ConfigError, RunConfig, load_config, own_baseline, value_errors
from rl_align.data import user_feature_names
from rl_align.retrieval.losses import RETRIEVAL_LOSSES
from rl_align.rewards.functions import REWARDS
from rl_align.rewards.scorers import SCORERS
from rl_align.rollouts import ENGINES
from rl_align.sid import TOKENIZERS
from rl_align.sid.buckets import BUCKET_SCORERS
from rl_align.sid.user_tokens import USER_ID
from rl_align.utils.plugins import absolute, load_plugins
from rl_align.utils.registry import Registry

# the names field metadata uses (``doc(..., registry="engines")``) → the registry that holds them
REGISTRIES: dict[str, Registry] = {"tokenizers": TOKENIZERS, "engines": ENGINES, "objectives": OBJECTIVES,
                                   "rewards": REWARDS, "baselines": BASELINES, "retrieval_losses": RETRIEVAL_LOSSES,
                                   "bucket_scorers": BUCKET_SCORERS, "reward_scorers": SCORERS}


def _registered_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """(dotted key, value, registry name) of every field declared with ``registry=`` metadata, recursively."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _registered_fields(v, f"{prefix}{f.name}.")
        elif "registry" in f.metadata:
            yield f"{prefix}{f.name}", v, f.metadata["registry"]


def config_errors(cfg: RunConfig) -> list[tuple[str, str]]:
    """(dotted key, what was expected): ranges and cross-field rules of every section (again, in case the config
    changed after loading), unknown registered names, and the objective's own rules."""
    errs = value_errors(cfg)
    for key, value, reg_name in _registered_fields(cfg):
        reg = REGISTRIES[reg_name]
        names = list(value) if isinstance(value, (list, dict)) else [value]
        for n in names:
            if n not in reg:
                errs.append((key, f"unknown {reg.kind} {n!r}; expected one of {reg.names()}"))
    if (cfg.sid.collision == "item_token" and cfg.sid.tokenizer in TOKENIZERS
            and TOKENIZERS.get(cfg.sid.tokenizer).variable_length):
        errs.append(("sid.collision", f"item_token needs fixed-length codes; tokenizer {cfg.sid.tokenizer!r} gives "
                                      "variable lengths (use append or reassign)"))
    if (cfg.sid.collision == "bucket" and cfg.sid.tokenizer in TOKENIZERS
            and not TOKENIZERS.get(cfg.sid.tokenizer).variable_length):
        errs.append(("sid.collision", f"bucket shares the codes of items that stopped early; tokenizer "
                                      f"{cfg.sid.tokenizer!r} gives fixed lengths (use sa2crq or sa2crq_vae)"))
    if cfg.sid.bucket_scorer in BUCKET_SCORERS and BUCKET_SCORERS.get(cfg.sid.bucket_scorer).attach_only:
        errs.append(("sid.bucket_scorer", f"{cfg.sid.bucket_scorer!r} needs a reward model trained after the sids "
                                          "stage; keep content or popularity here and attach it at evaluation "
                                          f"(rl-align eval RUN --bucket-scorer {cfg.sid.bucket_scorer}:din)"))
    if cfg.eval.bucket_cold_parents and not (cfg.eval.cold_expansion and cfg.sid.collision == "bucket"):
        errs.append(("eval.bucket_cold_parents", "needs eval.cold_expansion: true and sid.collision: bucket, got "
                                                 f"{cfg.eval.cold_expansion} and {cfg.sid.collision!r}"))
    errs += _item_token_init_errors(cfg)
    errs += _distill_errors(cfg)
    errs += _user_token_errors(cfg)
    if cfg.rl.algo in OBJECTIVES:
        errs += [(f"rl.{k}", v) for k, v in OBJECTIVES.get(cfg.rl.algo).config_errors(cfg.rl)]
    errs += _serving_prompt_errors(cfg)
    errs += _refit_ensemble_errors(cfg)
    return errs


def _refit_ensemble_errors(cfg: RunConfig) -> list[tuple[str, str]]:
    """An ensemble's stacking weights are fit on the held-out impressions' clicks, which sequence members refitted
    on every training event (``ranker.sequence_events: all``) trained on."""
    if cfg.ranker.sequence_events != "all" or "ensemble" not in cfg.ranker.scorers:
        return []
    seq = [m for m in cfg.ranker.ensemble_members if m in SCORERS and SCORERS.get(m).sequence]
    if seq:
        return [("ranker.sequence_events", f"expected cut when the ensemble stacks {seq}: its weights are fit on "
                                           "held-out clicks that models refitted on all events trained on")]
    return []


def _serving_prompt_errors(cfg: RunConfig) -> list[tuple[str, str]]:
    """``rl.serving_prompts`` needs a reward every term of which scores a prompt without a ground truth."""
    if cfg.rl.serving_prompts == 0:
        return []
    bad = [n for n in cfg.reward.functions if n in REWARDS and REWARDS.get(n).needs_target]
    if bad:
        return [("reward.functions", f"{bad[0]!r} reads the ground truth, which serving prompts "
                                     f"(rl.serving_prompts = {cfg.rl.serving_prompts:g}) do not have; expected "
                                     "terms that score without it, e.g. {ranker: 1.0}")]
    return []


def _user_token_errors(cfg: RunConfig) -> list[tuple[str, str]]:
    """``sid.user_tokens`` must name user features the dataset has (or ``user_id``)."""
    have = user_feature_names(cfg.data)
    missing = [n for n in cfg.sid.user_tokens if n != USER_ID and have is not None and n not in have]
    if missing:
        return [("sid.user_tokens", f"{missing[0]!r} is not a user feature of data.dataset {cfg.data.dataset!r}; "
                                    f"expected some of {have + [USER_ID]}")]
    return []


def _baseline_source_errors(cfg: RunConfig, key: str, src: str, model: str | None, npy: bool) -> list:
    """A ``baseline:<model>`` source must be trained by the baselines stage before sft; a path must exist."""
    st = list(cfg.stages)
    if model is not None:
        if model not in BASELINES:
            return [(key, f"unknown baseline model {model!r}; expected 'baseline:' + one of {BASELINES.names()}")]
        if "baselines" in st and "sft" in st and (model not in cfg.baseline.models
                                                   or st.index("baselines") > st.index("sft")):
            return [(key, f"{src!r} needs the baselines stage before sft with {model!r} in baseline.models, got "
                          f"stages {st} and baseline.models {cfg.baseline.models}")]
        return []
    p = Path(src)
    if not (npy and p.suffix == ".npy" and p.is_file()) and not (p / "model.safetensors").is_file():
        what = "an existing .npy file or a saved baseline directory" if npy else "a saved baseline directory"
        return [(key, f"expected 'baseline:<model>', {what} (with model.safetensors), got {src!r}")]
    return []


def _item_token_init_errors(cfg: RunConfig) -> list[tuple[str, str]]:
    """``sft.item_token_init`` needs an item-ID level, and its source must exist (or be trained before sft)."""
    src, key = cfg.sft.item_token_init, "sft.item_token_init"
    if src is None:
        return []
    if cfg.sid.collision != "item_token" and cfg.sid.history != "items":
        return [(key, f"needs item-ID tokens to initialise: sid.collision: item_token or sid.history: items, got "
                      f"{cfg.sid.collision!r} and {cfg.sid.history!r}")]
    return _baseline_source_errors(cfg, key, src, cfg.sft.item_token_baseline, npy=True)


def _distill_errors(cfg: RunConfig) -> list[tuple[str, str]]:
    """Every teacher of ``sft.distill_from`` / ``sft.distill_bag`` must name a baseline trained before sft, or a saved
    baseline directory; ``sft.distill_into`` other than tokens needs an item head."""
    s = cfg.sft
    if s.distill_from is None:
        return []
    if cfg.sid.history == "items":
        return [("sft.distill_from", "needs sid.history: codes (its soft targets follow the SID-token windows; "
                                     f"sid.history: items packs them differently), got {cfg.sid.history!r}")]
    if s.distill_into != "tokens" and cfg.policy.item_head == "none":
        return [("sft.distill_into", f"{s.distill_into!r} needs policy.item_head (free or free_sid), got 'none'")]
    errs = _baseline_source_errors(cfg, "sft.distill_from", s.distill_from, s.distill_baseline, npy=False)
    for src in s.distill_bag:
        errs += _baseline_source_errors(cfg, "sft.distill_bag", src, own_baseline(src), npy=False)
    return errs


def check_config(cfg: RunConfig, source: str = "<config>") -> RunConfig:
    """Import ``cfg.plugins`` (paths made absolute), then raise ConfigError (one line: the file, the key, what was
    expected) on the first problem; returns ``cfg``."""
    cfg.plugins = absolute(cfg.plugins)
    try:
        load_plugins(cfg.plugins)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    for key, expected in config_errors(cfg):
        raise ConfigError(f"{source}: {key}: {expected}")
    return cfg


def load_checked(path, overrides: list[str] | None = None) -> RunConfig:
    """:func:`rl_align.config.load_config` plus :func:`check_config`: everything that can be known before a run."""
    return check_config(load_config(path, RunConfig, overrides), str(path))
