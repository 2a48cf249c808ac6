"""Screen the temperature that orders *new* items inside a bucket in the cold-start mixture (issue 22).

In a bucket catalog with the cold expansion on, the items of a bucket without training interactions share α of
the bucket's mass by the content scorer's softmax at the catalog's ``sid.bucket_temperature`` (0.1 in the presets:
sharp, so one new item per bucket takes almost all of it), while the RQ-KMeans expansion spreads a parent's share
evenly over its new children. This re-evaluates a run's cold cases with the new items' temperature set apart
(warm items keep the saved one), one evaluation per temperature; a large T is the RQ rule (uniform).

    python experiments/bucket_cold_temperature.py runs/i22f-bucket-s0 0.1 1 100

Prints cold-case HR/NDCG@{1,5,10,20} per temperature. The cold cases are the test protocol's (there is no cold
valid set), so this is a screen of a mechanism, not a way to choose a setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rl_align.config import RunConfig, load_config
from rl_align.eval.run_eval import evaluate_run
from rl_align.sid.buckets import ContentScorer
from rl_align.sid.catalog import SidCatalog


class SplitTemperatureScorer(ContentScorer):
    """The saved content scorer with its cosine term divided by ``t_cold`` instead of T for items without training
    interactions (popularity 0); warm items score exactly as saved."""

    registry_name = "content-split-T"

    def __init__(self, base: ContentScorer, t_cold: float) -> None:
        super().__init__(base.popularity, base.vectors, base.temperature)
        self.t_cold = float(t_cold)

    def score(self, history: np.ndarray, cand: np.ndarray, users=None) -> np.ndarray:
        s = super().score(history, cand, users)
        prior = self._log_prior(cand)
        cold = self.popularity[np.maximum(cand, 0)] <= 0
        return np.where(cold, prior + (s - prior) * self.temperature / self.t_cold, s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("temperatures", type=float, nargs="+")
    args = ap.parse_args()
    cfg = load_config(args.run / "config.yaml", RunConfig).eval
    cfg.cold_expansion = True
    saved = SidCatalog.load(args.run / "sids" / "catalog").buckets.scorer
    if not isinstance(saved, ContentScorer):
        raise SystemExit(f"{args.run}: the catalog's saved scorer is {type(saved).__name__}, not content")
    for t in args.temperatures:
        res = evaluate_run(args.run, cfg, ("cold",), "sft", bucket_scorer=SplitTemperatureScorer(saved, t))
        m = res["cold"]["policy"]
        print(f"{args.run} new-item T {t:g}: " + "  ".join(f"{k}={v:.4f}" for k, v in m.items()), flush=True)


if __name__ == "__main__":
    main()
