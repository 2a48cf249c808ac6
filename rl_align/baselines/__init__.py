"""Item-ID sequential baselines (SASRec, GRU4Rec) ranked through the same evaluator as the SID policy."""

from rl_align.baselines import gru4rec, sasrec  # noqa: F401  (fill the registry)
from rl_align.baselines.base import BASELINES, SequenceRecommender

__all__ = ["BASELINES", "SequenceRecommender"]
