"""One toy plug-in of each kind: a tokenizer, a rollout engine, an objective and a reward.

Each is a class plus one registration. List this file in a run config (``plugins: [examples/plugins/toy_plugins.py]``)
and use the names: ``sid.tokenizer: toy_sign``, ``rl.engine: toy_tempered``, ``rl.algo: toy_anchor``,
``reward.functions: {toy_valid: 1.0}``. ``tests/test_extending.py`` runs all four through the pipeline on Ray.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from rl_align.algos.objectives import OBJECTIVES, Objective
from rl_align.rewards.functions import REWARDS, RewardFunction
from rl_align.rollouts.base import ENGINES
from rl_align.rollouts.torch_engine import TorchEngine
from rl_align.sid.base import TOKENIZERS, SidTokenizer
from rl_align.sid.codes import SidCodes


@TOKENIZERS.register("toy_sign")
class RandomProjectionTokenizer(SidTokenizer):
    """Level l's code = the argmax of ``codebook_size`` random projections of the embedding (no training)."""

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.cfg.codebook_size] * self.cfg.levels

    def fit(self, emb, popularity=None):
        rng = np.random.default_rng(self.cfg.seed)
        self.proj = rng.standard_normal((self.cfg.levels, emb.shape[1], self.cfg.codebook_size)).astype(np.float32)
        return self

    def encode(self, emb) -> SidCodes:
        return SidCodes.fixed(np.stack([(emb @ p).argmax(1) for p in self.proj], 1).astype(np.int32),
                              self.codebook_sizes)

    def last_level_candidates(self, emb, codes, topn):
        s = emb @ self.proj[-1]
        cand = np.argsort(-s, 1)[:, :topn]
        return cand.astype(np.int64), (-np.take_along_axis(s, cand, 1)).astype(np.float32)

    def _save_state(self, directory: Path) -> None:
        np.save(directory / "proj.npy", self.proj)

    def _load_state(self, directory: Path) -> None:
        self.proj = np.load(directory / "proj.npy", allow_pickle=False)


@ENGINES.register("toy_tempered")
class TemperedEngine(TorchEngine):
    """The torch engine, sampling at temperature 0.7 whatever the request says."""

    @classmethod
    def from_policy_dir(cls, policy_dir, catalog, device="cpu"):
        (Path(policy_dir).parent / "toy_engine_used").touch()  # evidence for the test: built in a rollout worker
        return super().from_policy_dir(policy_dir, catalog, device)

    def generate(self, request):
        if request.mode == "sample":
            request = dataclasses.replace(request, temperature=0.7)
        return super().generate(request)


@OBJECTIVES.register("toy_anchor")
class HalfAnchoredGrpo(Objective):
    """NLL(y*) + ½ GRPO on every sample."""

    def __call__(self, x):
        nll = self.nll(x)
        g, m = self.grpo(x)
        m.update(nll=float(nll.detach()), toy_objective=1.0)
        return nll + 0.5 * g, m


@REWARDS.register("toy_valid")
class ValidReward(RewardFunction):
    """1 for every rollout that decodes to a catalog item."""

    def __call__(self, inp, valid, ctx):
        return valid.float()
