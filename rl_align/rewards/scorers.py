"""Reward models a user picks by name (``reward.scorer``): the DIN ranker, item-ID sequence models, an ensemble.

Every reward model has the ranker's call — ``model(users (B,), history (B, H) left-aligned, -1 padded,
candidates (B, C)) → (B, C) click logits`` — plus ``n_items`` and ``n_users``, so the reward actors, the
gate's discriminability and ``rl-align ranker eval`` (its reward ceiling) serve any of them.

* ``din`` — the DIN/DCN ranker trained on exposure logs (``<run>/ranker/model``, Ray Train).
* ``sasrec`` / ``gru4rec`` — an item-ID sequence model of another family than the SID policy, trained on the
  training events only (:func:`rl_align.data.split.truncated_split`: each user's valid and test events and the
  events held out of the ranker's logs are cut off), its next-item log-probability turned into a click logit
  by Platt scaling ``a · log p(c | history) + b`` fitted on held-out impressions.
* ``ensemble`` — logistic regression on the members' click logits (``ranker.ensemble_members``), fitted on one
  half of the held-out impressions' users and checked on the other half (``scorer.json`` "calibration").

No model here reads a valid or test event: the held-out impressions are each user's last training events
(``exposure.holdout_events``), and the sequence models never see them either. ``tests/test_scorers.py`` trains
twice, once with every valid/test item replaced, and finds the same weights.

Adding one = a :class:`ScorerKind` subclass with ``@SCORERS.register("name")``.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from rl_align.baselines import BASELINES
from rl_align.baselines.train import fit
from rl_align.config import BaselineConfig, RewardConfig, RunConfig
from rl_align.data.split import truncated_split
from rl_align.eval.evaluate import eval_set
from rl_align.ranker.evaluate import evaluate_ranker, policy_beam, write_ranker_eval
from rl_align.ranker.metrics import auc
from rl_align.ranker.model import RankerLoadError, build_ranker, load_ranker
from rl_align.ranker.train import recent_history, run_ranker_training
from rl_align.utils.io import atomic_dir, atomic_path, load_npz, read_json, write_json
from rl_align.utils.registry import Registry

log = logging.getLogger("rl_align")

SCORER_FILE = "scorer.json"
WEIGHTS_FILE = "model.safetensors"


# --------------------------------------------------------------------------- models (pure torch)
class SequenceScorer(nn.Module):
    """An item-ID sequence model as a click scorer: ``logit(c) = a · mean_k log p_k(c | last L history items) + b``
    over ``seq`` and the ``bag`` (the same model trained with other seeds; empty: one model).

    Args:
        seq: a trained :class:`rl_align.baselines.base.SequenceRecommender`.
        n_users: users of the run (the reward request's user ids are checked against it; the model ignores them).
        bag: more trained models with ``seq``'s hyper-parameters (seed bagging).
    """

    def __init__(self, seq: nn.Module, n_users: int, bag: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.seq = seq
        self.bag = nn.ModuleList(bag)
        self.n_items, self.n_users = int(seq.hparams["n_items"]), int(n_users)
        self.register_buffer("calib", torch.tensor([1.0, 0.0]))

    def tokens(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H) left-aligned item indices, -1 padded → (B, L) the last L as item tokens (item + 1), left-padded 0."""
        L = int(self.seq.hparams["max_len"])
        if history.shape[1] == 0:
            return torch.zeros(history.shape[0], L, dtype=torch.long, device=history.device)
        n = (history >= 0).sum(1, keepdim=True)
        idx = n - L + torch.arange(L, device=history.device)
        tok = history.gather(1, idx.clamp(0, history.shape[1] - 1)) + 1
        return torch.where(idx >= 0, tok, torch.zeros_like(tok))

    def member_log_probs(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, H) histories, (B, C) candidates → (K, B, C) each member's log p(candidate | history) over the whole
        catalog, K = 1 + len(bag) (``seq`` first)."""
        tok, c = self.tokens(history), candidates.clamp(min=0)
        return torch.stack([torch.log_softmax(m.score_last(tok).float(), -1).gather(1, c)
                            for m in (self.seq, *self.bag)])

    def log_probs(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, H) histories, (B, C) candidates → (B, C) log p_seq(candidate | history), the mean over ``seq`` and the
        bag."""
        return self.member_log_probs(history, candidates).mean(0)

    def forward(self, users: torch.Tensor, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.calib[0] * self.log_probs(history, candidates) + self.calib[1]


class EnsembleScorer(nn.Module):
    """``logit(c) = Σ_k w_k · logit_k(c) + b`` over member reward models (each with the ranker's call)."""

    def __init__(self, members: dict[str, nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleDict(members)
        first = next(iter(members.values()))
        self.n_items, self.n_users = int(first.n_items), int(first.n_users)
        self.register_buffer("weights", torch.ones(len(members)) / len(members))
        self.register_buffer("bias", torch.zeros(1))

    def features(self, users: torch.Tensor, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B,), (B, H), (B, C) → (B, C, K) the members' click logits."""
        return torch.stack([m(users, history, candidates).float() for m in self.members.values()], -1)

    def forward(self, users: torch.Tensor, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.features(users, history, candidates) @ self.weights + self.bias


class FaultyScorer(nn.Module):
    """A reward model that is wrong on a fixed share of users (``reward.fault_*``): the setting a per-sample gate is
    for, where a reward is trustworthy for some prompts and misleading for others, made on purpose.

    Args:
        model: any reward model with the ranker's call. share: the share of ``model.n_users`` users made faulty (a
            fixed draw with ``seed``). kind: ``negate`` (their click logits' sign flipped) or ``no_history``
            (scored with an empty history).
    """

    def __init__(self, model: nn.Module, share: float, kind: str, seed: int) -> None:
        super().__init__()
        if kind not in ("negate", "no_history"):
            raise ValueError(f"reward.fault_kind: expected negate or no_history, got {kind!r}")
        self.model, self.kind = model, kind
        self.n_items, self.n_users = model.n_items, model.n_users
        self.register_buffer("faulty", torch.from_numpy(faulty_users(model.n_users, share, seed)))

    def forward(self, users: torch.Tensor, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """users (B,), history (B, H) -1 padded, candidates (B, C) → (B, C) click logits, wrong on faulty rows."""
        bad = self.faulty[users][:, None]
        if self.kind == "no_history":
            return self.model(users, torch.where(bad, torch.full_like(history, -1), history), candidates)
        logit = self.model(users, history, candidates)
        return torch.where(bad, -logit, logit)


def faulty_users(n_users: int, share: float, seed: int) -> np.ndarray:
    """(n_users,) bool: the users ``reward.fault_share`` makes faulty, the same draw in every process."""
    return np.random.default_rng(seed).random(n_users) < share


def with_fault(model: nn.Module, cfg: RewardConfig) -> nn.Module:
    """``model`` wrapped in :class:`FaultyScorer` when ``cfg.fault_share > 0``, else ``model`` itself."""
    if cfg.fault_share <= 0:
        return model
    return FaultyScorer(model, cfg.fault_share, cfg.fault_kind, cfg.fault_seed).eval()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-4, steps: int = 100) -> tuple[torch.Tensor, float]:
    """Logistic regression by L-BFGS. x: (N, K) features, y: (N,) 0/1 → weights (K,) and bias."""
    x, y = x.double(), y.double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():  # start from the base rate
        b.fill_(float(torch.logit(y.mean().clamp(1e-6, 1 - 1e-6))))
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float(), float(b.detach())


# --------------------------------------------------------------------------- calibration data
def heldout_impressions(run_path: Path, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """The exposure log's held-out impressions split by user into ``fit`` and ``check`` halves.

    Each half: ``users`` (E,), ``history`` (E, H0) left-aligned, ``shown`` (E, M) and ``clicks`` (E, M).
    """
    la = load_npz(Path(run_path) / "exposure" / "log.npz")
    m = la["heldout"]
    users = np.unique(la["users"][m])
    half = set(np.random.default_rng(seed).permutation(users)[: users.size // 2].tolist())
    in_fit = np.isin(la["users"], list(half))
    return {name: {k: la[k][m & sel] for k in ("users", "history", "shown", "clicks")}
            for name, sel in (("fit", in_fit), ("check", ~in_fit))}


@torch.no_grad()
def slot_features(score, rows: dict[str, np.ndarray], H: int,
                  batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every shown slot: ``score(users (B,), history (B, H), shown (B, M))`` → (B, M[, K]) gives
    (N, K) features of the N valid slots, and their clicks (N,) as float. The model is put in eval mode by the
    caller."""
    hist = recent_history(rows["history"], H)
    out = []
    for s in range(0, rows["users"].size, batch):
        u, h, c = (torch.from_numpy(a[s: s + batch]) for a in (rows["users"], hist, np.maximum(rows["shown"], 0)))
        out.append(score(u, h, c).reshape(c.shape[0] * c.shape[1], -1))
    ok = torch.from_numpy((rows["shown"] >= 0).reshape(-1))
    return torch.cat(out)[ok], torch.from_numpy(rows["clicks"].reshape(-1).astype(np.float32))[ok]


def _check(logit: torch.Tensor, y: torch.Tensor) -> dict:
    """AUC and log-loss of click logits on the check half."""
    return {"auc": auc(torch.sigmoid(logit).numpy(), y.numpy().astype(bool)),
            "logloss": float(F.binary_cross_entropy_with_logits(logit.double(), y.double())), "slots": int(y.numel())}


# --------------------------------------------------------------------------- kinds (train + load)
class ScorerKind(ABC):
    """How one kind of reward model is trained from a run's training data and rebuilt from its directory."""

    #: an item-ID sequence model that the ``ranker.sequence_*`` settings shape (refit, bagging, history length)
    sequence: bool = False

    @abstractmethod
    def train(self, run_path: Path, cfg: RunConfig) -> dict:
        """Train on ``run_path``'s training events, save to :func:`scorer_path`; returns a summary."""

    @abstractmethod
    def build(self, meta: dict) -> nn.Module:
        """An untrained module with the architecture ``meta`` (a ``scorer.json``) describes."""


SCORERS: Registry[type[ScorerKind]] = Registry("reward scorer")


def scorer_path(run_path: str | Path, name: str) -> Path:
    """Where reward model ``name`` of a run lives: ``ranker/model`` (din) or ``ranker/scorers/<name>``."""
    return Path(run_path) / "ranker" / ("model" if name == "din" else f"scorers/{name}")


def save_scorer(model: nn.Module, directory: Path, meta: dict) -> None:
    """``model.safetensors`` + ``scorer.json``, atomically (no pickle)."""
    with atomic_dir(directory) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        write_json(tmp / SCORER_FILE, meta)


def load_scorer(directory: str | Path, expect_items: list | None = None) -> nn.Module:
    """A reward model from its directory: a DIN checkpoint (``ranker.json``) or a ``scorer.json`` of any kind."""
    directory = Path(directory)
    if not (directory / SCORER_FILE).exists():
        return load_ranker(directory, expect_items=expect_items)[0]
    meta = read_json(directory / SCORER_FILE)
    model = SCORERS.get(meta["kind"])().build(meta)
    try:
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)), strict=True)
    except (RuntimeError, OSError) as e:
        raise RankerLoadError(f"{directory / WEIGHTS_FILE}: weights do not match {SCORER_FILE}: {e}") from None
    return model.eval()


@SCORERS.register("din")
class DinKind(ScorerKind):
    def train(self, run_path, cfg):
        return run_ranker_training(cfg, Path(run_path))

    def build(self, meta):
        raise RankerLoadError("a din reward model is a ranker checkpoint (ranker.json), not a scorer.json")


def best_epoch(curve: list[dict]) -> int:
    """The epoch of a :func:`rl_align.baselines.train.fit` curve with the best valid NDCG@10 (the last if none)."""
    scored = [r for r in curve if "valid_ndcg@10" in r]
    return max(scored, key=lambda r: r["valid_ndcg@10"])["epoch"] if scored else len(curve)


class SequenceKind(ScorerKind):
    """An item-ID model of ``rl_align.baselines`` (settings: the ``baseline`` section) as a reward model."""

    model_name = ""
    sequence = True

    def train(self, run_path, cfg):
        run_path = Path(run_path)
        split = load_npz(run_path / "data" / "split.npz")
        n_users = split["seq_offsets"].size - 1
        n_items = int(split["item_popularity"].size)
        L = cfg.ranker.sequence_max_len or cfg.data.max_history
        drop = 2 + cfg.exposure.holdout_events  # valid, test, and the ranker's held-out events
        trunc = truncated_split(split["seq_items"], split["seq_offsets"], drop, L)
        ckpt = self.checkpoints(run_path)
        fits = [fit(self.model_name, trunc, n_items, self.member_cfg(cfg, k), L, ckpt_dir=ckpt / f"cut{k}")
                for k in range(cfg.ranker.sequence_seeds)]
        model = SequenceScorer(fits[0][0], n_users, [f[0] for f in fits[1:]]).eval()
        calibration = self.calibrate(model, run_path, cfg)
        extra = {"trained_on": f"training events without each user's last {drop}",
                 "epochs": [len(curve) for _, curve in fits]}
        if cfg.ranker.sequence_events == "all":
            extra = {"trained_on": "every training event (each user's sequence without its valid and test events)",
                     "cut_model": extra, "epochs": [best_epoch(curve) for _, curve in fits]}
            model = self.refit_on_all(split, n_items, n_users, cfg, L, extra["epochs"], model.calib, ckpt)
            calibration["fit_on"] += " (by the cut model, which never saw them; carried over)"
            calibration["check_of"] = "the cut model"
        meta = self.meta(model, {"calibration": calibration, **extra})
        save_scorer(model, scorer_path(run_path, self.registry_name), meta)
        shutil.rmtree(ckpt, ignore_errors=True)
        return meta

    def checkpoints(self, run_path: Path) -> Path:
        """Where the members' training resumes from (``ranker/scorers/<name>.checkpoints``; removed once saved)."""
        return scorer_path(run_path, self.registry_name).with_name(f"{self.registry_name}.checkpoints")

    @staticmethod
    def member_cfg(cfg: RunConfig, k: int) -> BaselineConfig:
        """The ``baseline`` settings of bag member ``k``: seed ``baseline.seed + k``."""
        return dataclasses.replace(cfg.baseline, seed=cfg.baseline.seed + k)

    @staticmethod
    def calibrate(model: SequenceScorer, run_path: Path, cfg: RunConfig) -> dict:
        """Platt scaling of the model's log-probability on half of the held-out impressions' users, checked on the
        other half; sets ``model.calib``."""
        rows = heldout_impressions(run_path, cfg.seed)
        x, y = slot_features(lambda u, h, c: model.log_probs(h, c), rows["fit"], cfg.ranker.max_history)
        w, b = fit_logistic(x, y)
        model.calib.copy_(torch.tensor([float(w[0]), b]))
        xc, yc = slot_features(model, rows["check"], cfg.ranker.max_history)
        return {"a": float(w[0]), "b": b, "fit_on": "held-out impressions, half of the users",
                "check": _check(xc[:, 0], yc)}

    def refit_on_all(self, split: dict, n_items: int, n_users: int, cfg: RunConfig, L: int, epochs: list[int],
                     calib: torch.Tensor, ckpt: Path) -> SequenceScorer:
        """The same settings trained on every training event, member k for ``epochs[k]`` epochs (its cut model's
        best; no early stopping: valid and test are not even handed over), with the cut model's calibration."""
        events = {"seq_items": split["seq_items"], "seq_offsets": split["seq_offsets"]}
        seqs = []
        for k, n in enumerate(epochs):
            log.info("reward model %s: refit on every training event, %d epochs", self.registry_name, n)
            bcfg = dataclasses.replace(self.member_cfg(cfg, k), epochs=n)
            seqs.append(fit(self.model_name, events, n_items, bcfg, L, validate=False, ckpt_dir=ckpt / f"all{k}")[0])
        model = SequenceScorer(seqs[0], n_users, seqs[1:]).eval()
        model.calib.copy_(calib)
        return model

    def meta(self, model: SequenceScorer, extra: dict | None = None) -> dict:
        return {"kind": self.registry_name, "n_users": model.n_users, "bag": 1 + len(model.bag),
                "seq": {"model": self.model_name, **model.seq.hparams}, **(extra or {})}

    def build(self, meta):
        s = meta["seq"]
        seqs = [BASELINES.get(s["model"])(**{k: s[k] for k in ("n_items", "max_len", "hidden", "layers", "heads",
                                                                 "dropout")}) for _ in range(meta.get("bag", 1))]
        return SequenceScorer(seqs[0], meta["n_users"], seqs[1:])


@SCORERS.register("sasrec")
class SasrecKind(SequenceKind):
    model_name = "sasrec"


@SCORERS.register("gru4rec")
class Gru4recKind(SequenceKind):
    model_name = "gru4rec"


@SCORERS.register("ensemble")
class EnsembleKind(ScorerKind):
    """Stacks trained members (each must be trained first: listed before ``ensemble`` in ``ranker.scorers``)."""

    def train(self, run_path, cfg):
        run_path = Path(run_path)
        names = list(cfg.ranker.ensemble_members)
        members = {n: load_scorer(scorer_path(run_path, n)) for n in names}
        model = EnsembleScorer(members).eval()
        rows = heldout_impressions(run_path, cfg.seed)
        x, y = slot_features(model.features, rows["fit"], cfg.ranker.max_history)
        w, b = fit_logistic(x, y)
        model.weights.copy_(w)
        model.bias.fill_(b)
        xc, yc = slot_features(model.features, rows["check"], cfg.ranker.max_history)
        check = {"ensemble": _check(xc @ w + b, yc), **{n: _check(xc[:, k], yc) for k, n in enumerate(names)}}
        meta = {"kind": "ensemble", "members": {n: self.member_meta(n, scorer_path(run_path, n)) for n in names},
                "weights": dict(zip(names, w.tolist())), "bias": b,
                "calibration": {"fit_on": "held-out impressions, half of the users", "check": check}}
        save_scorer(model, scorer_path(run_path, "ensemble"), meta)
        return meta

    @staticmethod
    def member_meta(name: str, directory: Path) -> dict:
        if (directory / SCORER_FILE).exists():
            return read_json(directory / SCORER_FILE)
        return {"kind": "din", "ranker": read_json(directory / "ranker.json")}

    def build(self, meta):
        members = {}
        for n, m in meta["members"].items():
            members[n] = (build_ranker(m["ranker"]) if m["kind"] == "din" else SCORERS.get(m["kind"])().build(m))
        return EnsembleScorer(members)


def train_scorers(run_path: str | Path, cfg: RunConfig, skip: tuple[str, ...] = ()) -> dict:
    """Train the reward models of ``ranker.scorers`` in order, except ``skip``; {name: summary}."""
    out = {}
    for name in (n for n in cfg.ranker.scorers if n not in skip):
        log.info("reward model %s: training", name)
        out[name] = SCORERS.get(name)().train(Path(run_path), cfg)
    return out


def evaluate_scorers(run_path: str | Path, cfg: RunConfig, names: list[str], split: str,
                     with_policy: bool = True) -> dict:
    """``rl-align ranker eval`` for one or more reward models with one policy beam search (``with_policy``: the
    policy's negatives and the reward ceiling): each one's report (``ranker/report[_<name>][_<split>].md``) and
    the reward-ceiling table of all (``ranker/ceilings_<split>.md``)."""
    run_path = Path(run_path)
    beam = None
    if with_policy:
        arrays = load_npz(run_path / "data" / "split.npz")
        beam = policy_beam(run_path, eval_set(arrays, split), cfg.ranker.eval_negatives + 1, cfg.eval)
    items = read_json(run_path / "data" / "items.json")["item_ids"]
    out = {}
    for name in names:
        model = None if name == "din" else load_scorer(scorer_path(run_path, name), expect_items=items)
        if cfg.reward.fault_share > 0:   # the ceiling of the reward alignment would be given
            model = with_fault(model or load_scorer(scorer_path(run_path, name), expect_items=items), cfg.reward)
        res = evaluate_ranker(run_path, cfg.ranker, cfg.eval, split, with_policy=beam is not None, model=model,
                              beam=beam)
        res["heldout"]["in_sample"] = name != "din" and trained_on_heldout(scorer_path(run_path, name))
        if cfg.reward.fault_share > 0:
            res["fault"] = {k: getattr(cfg.reward, f"fault_{k}") for k in ("share", "kind", "seed")}
        write_ranker_eval(run_path, res, name + ("-faulty" if "fault" in res else ""))
        out[name] = res
    with atomic_path(ceilings_path(run_path, cfg, split)) as tmp:
        Path(tmp).write_text(ceiling_table(out, split), encoding="utf-8")
    return out


def ceilings_path(run_path: str | Path, cfg: RunConfig, split: str) -> Path:
    """``ranker/ceilings_<split>.md``; ``ceilings_faulty_<split>.md`` for a faulty reward (never the true one's)."""
    return Path(run_path) / "ranker" / f"ceilings{'_faulty' if cfg.reward.fault_share > 0 else ''}_{split}.md"


def trained_on_heldout(directory: Path) -> bool:
    """Whether a saved reward model (or an ensemble member) learned from the held-out impressions' events (a
    refit on every training event): its held-out AUC is then an in-sample figure."""
    meta = read_json(directory / SCORER_FILE) if (directory / SCORER_FILE).exists() else {}
    return "cut_model" in meta or any("cut_model" in m for m in meta.get("members", {}).values())


def ceiling_table(results: dict[str, dict], split: str) -> str:
    """Markdown: per reward model, held-out AUC and what re-ranking the policy's beam by it can reach."""
    lines = [f"# Reward ceilings ({split} events)", "",
             "The policy's beam re-ranked by log π + α · logit r (the KL-regularised RL optimum's order, α = 1/β); "
             "gain = best HR@10 over α ≥ 0 / the policy's own order.", "",
             "| reward model | held-out AUC | policy HR@10 | ranker-alone HR@10 | best α | best HR@10 | gain |",
             "|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        if f := res.get("fault"):
            name = f"{name}, faulty for {f['share']:.0%} of users ({f['kind']}, seed {f['seed']})"
        auc_ = f"{res['heldout']['heldout_auc']:.4f}" + (" (in-sample)" if res["heldout"].get("in_sample") else "")
        rr = res.get("rerank")
        if not rr:
            lines.append(f"| {name} | {auc_} | – | – | – | – | – |")
            continue
        lines.append(f"| {name} | {auc_} | {rr['policy']['hr@10']:.4f} | {rr['ranker_only']['hr@10']:.4f} | "
                     f"{rr['best_alpha']:g} | {rr['best']:.4f} | {rr['gain']:.3f}× |")
    if any(r["heldout"].get("in_sample") for r in results.values()):
        lines += ["", "(in-sample): a model refitted on every training event (`ranker.sequence_events: all`) learned "
                      "the held-out impressions' events, so its held-out AUC is not a held-out figure."]
    return "\n".join(lines) + "\n"
