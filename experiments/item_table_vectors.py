"""Item vectors for the SID tokenizer from an item-ID model's item table (issue 24: collaborative SIDs).

SASRec's item embeddings are trained on the training windows only, to predict the next item, so items close in that
table are items users take next to each other. This writes them (optionally joined with another vector file,
each half L2-normalised and scaled by √½ so the cosine of the joined vectors is the mean of the two cosines) as an
``(n_items, d)`` float32 array in catalog item order, for ``embed.source: npy``:

    python experiments/item_table_vectors.py runs/REF/baselines/sasrec OUT.npy [--join runs/sci-l1-s0/retrieval/item_view.npy]
    rl-align run … --set embed.source=npy --set embed.npy_path=OUT.npy --set embed.cf_dim=0

Row 0 of the model's table is padding and is dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rl_align.baselines.train import load_baseline
from rl_align.embed.collaborative import blend
from rl_align.utils.io import write_npy


def _unit(x: np.ndarray) -> np.ndarray:
    """(n, d) → rows scaled to unit L2 norm."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path, help="a trained baseline (model.safetensors + model.json)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--join", type=Path, help="an (n_items, d') .npy to join, half and half in cosine")
    a = ap.parse_args()
    table = load_baseline(a.model_dir).item_emb.weight[1:].detach().numpy().astype(np.float32)
    if a.join is not None:
        table = blend(np.load(a.join, allow_pickle=False), _unit(table), 0.5)  # the embed stage's text + cf join
    write_npy(a.out, table)
    print(f"{a.out}: {table.shape}")


if __name__ == "__main__":
    main()
