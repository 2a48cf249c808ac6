"""Reward models (ranker, item-ID sequence scorers, ensemble), the reward functions, Ray reward actors and the
reward-model within-bucket scorer (registered on import)."""

from rl_align.rewards import bucket_scorer  # noqa: F401  (registers sid.bucket_scorer "reward")
