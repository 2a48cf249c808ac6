"""Rollout engines (torch, vLLM) behind one contract; Ray rollout workers come with the RL issue."""

from rollouts.base import ENGINES, GenerationRequest, RolloutBatch, RolloutEngine

__all__ = ["ENGINES", "GenerationRequest", "RolloutBatch", "RolloutEngine", "build_engine"]


def build_engine(name: str, **kwargs) -> RolloutEngine:
    """Instantiate the engine registered as ``name`` (``torch`` or ``vllm``)."""
    if name == "torch":
        import rollouts.torch_engine  # noqa: F401
    elif name == "vllm":
        import rollouts.vllm_engine  # noqa: F401
    return ENGINES.get(name)(**kwargs)
