"""Semantic IDs: tokenizers (RQ-KMeans, RQ-VAE), collision resolution, catalog and prefix trie."""

from rl_align.sid import rq_kmeans, rq_vae, sa2crq, sa2crq_vae  # noqa: F401  (each registers its tokenizer)
from rl_align.sid.base import TOKENIZERS, SidTokenizer, build_tokenizer
from rl_align.sid.catalog import BOS, EOS, PAD, SEP, SPECIALS, UNK, SidCatalog, TokenLayout
from rl_align.sid.codes import SidCodes
from rl_align.sid.collisions import resolve_collisions
from rl_align.sid.trie import SidTrie

__all__ = ["TOKENIZERS", "SidTokenizer", "build_tokenizer", "SidCatalog", "TokenLayout", "SidCodes",
           "SidTrie", "resolve_collisions", "PAD", "BOS", "EOS", "SEP", "UNK", "SPECIALS"]
