"""Every config section refuses a bad value when the config loads: before any run dir exists or any stage runs.

One row per rule kind and section: the CLI must exit with 2 and one line naming the file, the dotted key and
what was expected, and leave no run directory behind.
"""

from __future__ import annotations

import dataclasses

import pytest

from rl_align.checks import REGISTRIES, check_config
from rl_align.cli import main
from rl_align.config import ConfigError, RunConfig, value_errors

ALL_STAGES = "[data, embed, sids, sft, eval, baselines, exposure, ranker, rl, report]"

CASES = [
    # (override, dotted key in the message, text in the message)
    ("stages=[data, sft, dat]", "stages", "expected distinct names"),
    ("data.max_history=0", "data.max_history", "≥ 1"),
    ("data.cold_share=1.0", "data.cold_share", "< 1"),
    ("data.synthetic.stay_prob=1.5", "data.synthetic.stay_prob", "≤ 1"),
    ("embed.cf_weight=2", "embed.cf_weight", "≤ 1"),
    ("embed.cf_dim=-1", "embed.cf_dim", "≥ 0"),
    ("data.cold_share=0.1", "embed.cf_fill_neighbours", "held-out items would get a zero collaborative half"),
    ("sid.tokenizer=rq_kmean", "sid.tokenizer", "unknown SID tokenizer 'rq_kmean'"),
    ("sid.codebook_size=1", "sid.codebook_size", "≥ 2"),
    ("sid.rq_vae.lr=0", "sid.rq_vae.lr", "> 0"),
    ("sid.sa2crq.tau=0", "sid.sa2crq.tau", "> 0"),
    ("sid.collision=item_token", "sid.collision", "item_token needs fixed-length codes"),
    ("sid.bucket_scorer=reward", "sid.bucket_scorer", "attach it at evaluation"),
    ("policy.num_heads=3", "policy.num_heads", "must divide hidden_size"),
    ("policy.attention_dropout=1", "policy.attention_dropout", "< 1"),
    ("sft.batch_size=63", "sft.batch_size", "multiple of num_workers"),
    ("sft.zero_stage=4", "sft.zero_stage", "≤ 3"),
    ("sft.ema_decay=1.0", "sft.ema_decay", "< 1"),
    ("sft.label_smoothing=1.0", "sft.label_smoothing", "< 1"),
    ("sft.window_items=40", "sft.window_items", "data.max_history + 1"),
    ("sft.window_stride=30", "sft.window_stride", "≤ the training window (21 items"),
    ("sft.window_stride=0", "sft.window_stride", "≥ 1"),
    ("sft.distill_weight=-1", "sft.distill_weight", "≥ 0"),
    ("sft.distill_temperature=0", "sft.distill_temperature", "> 0"),
    ("sft.distill_topk=0", "sft.distill_topk", "≥ 1"),
    ("eval.ks=[0, 10]", "eval.ks", "integers ≥ 1"),
    ("eval.bucket_cold_parents=true", "eval.bucket_cold_parents", "needs eval.cold_expansion: true"),
    ("eval.beams=0", "eval.beams", "≥ 1"),
    ("eval.cold_valid_share=0.5", "eval.cold_valid_share", "expected 0 without the cold-start protocol"),
    ("baseline.models=[sasrek]", "baseline.models", "unknown baseline model"),
    ("baseline.dropout=1.5", "baseline.dropout", "< 1"),
    ("baseline.window_stride=60", "baseline.window_stride", "≤ baseline.max_len + 1 = 21"),
    ("retrieval.pq_m=5", "retrieval.pq_m", "must divide dim (64)"),
    ("retrieval.nprobes=[1, 64]", "retrieval.nprobes", "integers in [1, nlist=32]"),
    ("retrieval.loss=triplet", "retrieval.loss", "unknown retrieval loss 'triplet'"),
    ("exposure.epsilon=-0.1", "exposure.epsilon", "≥ 0"),
    ("exposure.slate_size=0", "exposure.slate_size", "≥ 1"),
    ("ranker.lr=0", "ranker.lr", "> 0"),
    ("ranker.dropout=1", "ranker.dropout", "< 1"),
    ("reward.functions={exact_macth: 1.0}", "reward.functions", "unknown reward function 'exact_macth'"),
    ("reward.functions={ranker: .nan}", "reward.functions.ranker", "finite number"),
    ("reward.replicas=0", "reward.replicas", "≥ 1"),
    ("reward.future_discount=0", "reward.future_discount", "> 0"),
    ("rl.group_size=-3", "rl.group_size", "≥ 1"),
    ("rl.group_size=1", "rl.group_size", "≥ 2 for group-normalised advantages"),
    ("rl.clip_eps=2", "rl.clip_eps", "< 1"),
    ("rl.algo=adagrpoo", "rl.algo", "unknown alignment objective"),
    ("rl.engine=vllmm", "rl.engine", "unknown rollout engine"),
    ("rl.prompts_per_step=30", "rl.micro_batch_prompts", "must divide prompts_per_step / learners"),
    ("rl.exclude_seen=true", "rl.exclude_seen", "needs constrained"),
    ("rl.deepspeed={train_batch_size: 8}", "rl.deepspeed", "set by rl.prompts_per_step"),
    ("rl.adagrpo.a=1.5", "rl.adagrpo.a", "≤ 1"),
    ("rl.preference.rdrw_min_weight=0", "rl.preference.rdrw_min_weight", "> 0"),
    ("rl.preference.exposure_share=1.5", "rl.preference.exposure_share", "≤ 1"),
    ("rl.preference.beam=1", "rl.preference.beam", "≥ 2"),
    ("rl.adagrpo.k_d=9", "rl.adagrpo.k_d", "group_size=8"),
]
EXTRA = {"data.cold_share=0.1": ["embed.cf_dim=64"], "sid.collision=item_token": ["sid.tokenizer=sa2crq"], "sft.batch_size=63": ["sft.num_workers=2"], "rl.exclude_seen=true": ["rl.constrained=false"]}


@pytest.mark.parametrize("override,key,text", CASES, ids=[c[0] for c in CASES])
def test_bad_value_fails_at_load_naming_file_and_key(tmp_path, capsys, override, key, text):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"stages: {ALL_STAGES}\n")
    sets = [a for o in [override, *EXTRA.get(override, [])] for a in ("--set", o)]
    assert main(["run", str(cfg), *sets, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err                          # one line
    assert "bad.yaml" in err and f"{key}:" in err and text in err, err
    assert not (tmp_path / "run").exists()                    # nothing ran, nothing was written


def test_every_section_has_a_case():
    sections = {f.name for f in dataclasses.fields(RunConfig)
                if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory())}
    covered = {c[1].split(".")[0] for c in CASES}
    assert sections <= covered, sections - covered


def test_every_registry_field_is_checked():
    """Each registry named in field metadata exists, so a new registered field cannot go unchecked."""
    names = set()
    for f in dataclasses.fields(RunConfig):
        v = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(v):
            names |= {g.metadata["registry"] for g in dataclasses.fields(v) if "registry" in g.metadata}
    assert names == set(REGISTRIES), (names, set(REGISTRIES))


def test_config_changed_after_loading_is_checked_again():
    cfg = RunConfig()
    assert value_errors(cfg) == []
    cfg.rl.clip_eps = 0.0
    with pytest.raises(ConfigError, match="rl.clip_eps: expected a value > 0 and < 1, got 0.0"):
        check_config(cfg, "mine.yaml")


def test_presets_and_cluster_configs_pass(tmp_path):
    from pathlib import Path

    from rl_align.checks import load_checked

    root = Path(__file__).resolve().parents[1]
    for p in [*(root / "experiments" / "configs").glob("*.yaml"), *(root / "clusters").glob("*.yaml")]:
        if p.name in ("cluster.yaml", "kuberay-rayjob.yaml", "runtime_env.yaml"):
            continue
        load_checked(p)
