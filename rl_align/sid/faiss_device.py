"""Where faiss runs: ``sid.faiss_gpu`` = ``auto`` (GPU when faiss reports one), ``on`` (GPU or fail) or ``off``."""

from __future__ import annotations

import faiss


def faiss_gpu(setting: str) -> bool:
    """True if k-means and flat-index searches should run on the GPU(s) faiss sees."""
    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if setting == "on" and n == 0:
        raise ValueError("sid.faiss_gpu: on, but faiss reports no GPU (faiss-cpu installed, or no visible device); "
                         "use auto or off")
    return setting != "off" and n > 0


def flat_index(d: int, gpu: bool, inner_product: bool = False):
    """An exact flat index (L2, or inner product), on every GPU when ``gpu``."""
    index = faiss.IndexFlatIP(d) if inner_product else faiss.IndexFlatL2(d)
    return faiss.index_cpu_to_all_gpus(index) if gpu else index
