"""Alignment objectives and their pieces (pure torch; unit-tested without Ray)."""

from rl_align.algos import (
    dpo,  # noqa: F401  (registers dpo, sdpo, simpo, rad_dpo)
    tilted,  # noqa: F401  (registers tilted)
)
from rl_align.algos.objectives import OBJECTIVES, LossInputs, Objective, build_objective

__all__ = ["OBJECTIVES", "LossInputs", "Objective", "build_objective"]
