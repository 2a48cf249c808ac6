"""rl-align: train and align generative retrievers over Semantic IDs, on Ray."""

__version__ = "0.1.0"
