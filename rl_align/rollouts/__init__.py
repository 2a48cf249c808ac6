"""Rollout engines (torch, vLLM) behind one contract, and the Ray rollout workers that hold them.

Importing the package registers the built-in engines (``rl_align.rollouts.torch_engine``,
``rl_align.rollouts.vllm_engine``, which imports vLLM only when an engine is built).
A new engine is one module with an ``@ENGINES.register("name")`` class, imported here.
"""

from rl_align.rollouts import torch_engine, vllm_engine  # noqa: F401  (each registers its engine)
from rl_align.rollouts.base import ENGINES, GenerationRequest, RolloutBatch, RolloutEngine

__all__ = ["ENGINES", "GenerationRequest", "RolloutBatch", "RolloutEngine", "build_engine"]


def build_engine(name: str, **kwargs) -> RolloutEngine:
    """Instantiate the engine registered as ``name`` with its constructor's arguments."""
    return ENGINES.get(name)(**kwargs)
