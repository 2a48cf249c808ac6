"""Item embeddings: text → vectors with a local encoder, or user-supplied arrays; cached by content hash."""

from rl_align.embed.encoders import EMBEDDERS, ItemEmbedder, embed_items, load_npy_embeddings

__all__ = ["EMBEDDERS", "ItemEmbedder", "embed_items", "load_npy_embeddings"]
