"""RQ-VAE (TIGER): an MLP autoencoder whose latent is residual-quantised over L codebooks.

Loss = MSE reconstruction + Σ_l (‖sg(r_l) − e_l‖² + β‖r_l − sg(e_l)‖²), straight-through
gradients to the encoder. Codebooks start from k-means on the first latents and
codes that no item uses are restarted on random residuals every few epochs, so
the codebooks do not collapse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from rl_align.config import SidConfig
from rl_align.sid.base import TOKENIZERS, SidTokenizer
from rl_align.sid.codes import SidCodes
from rl_align.sid.rq_kmeans import kmeans
from rl_align.utils.io import atomic_path


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RQVAEModel(nn.Module):
    """Encoder/decoder MLPs and L codebooks of K × latent_dim."""

    def __init__(self, in_dim: int, hidden: list[int], latent: int, levels: int, k: int) -> None:
        super().__init__()
        self.encoder = _mlp([in_dim, *hidden, latent])
        self.decoder = _mlp([latent, *reversed(hidden), in_dim])
        self.codebooks = nn.Parameter(torch.randn(levels, k, latent) * 0.01)

    @staticmethod
    def nearest(r: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
        """(B, D) residuals, (K, D) codebook → (B,) nearest code index."""
        d = (r * r).sum(1, keepdim=True) - 2 * r @ book.T + (book * book).sum(1)[None, :]
        return d.argmin(1)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """z (B, D) → (z_q (B, D), codes (B, L), vq loss per level summed (scalar terms), residuals per level).

        Returns the codebook loss and commitment loss separately (both scalars).
        """
        r = z
        zq = torch.zeros_like(z)
        codes, book_loss, commit, residuals = [], z.new_zeros(()), z.new_zeros(()), []
        for lvl in range(self.codebooks.shape[0]):
            book = self.codebooks[lvl]
            idx = self.nearest(r.detach(), book.detach())
            e = book[idx]
            residuals.append(r.detach())
            book_loss = book_loss + ((r.detach() - e) ** 2).sum(1).mean()
            commit = commit + ((r - e.detach()) ** 2).sum(1).mean()
            zq = zq + e
            r = r - e.detach()
            codes.append(idx)
        return zq, torch.stack(codes, 1), torch.stack([book_loss, commit]), residuals


@TOKENIZERS.register("rq_vae")
class RQVAE(SidTokenizer):
    """TIGER-style RQ-VAE tokenizer (settings in ``SidConfig.rq_vae``)."""


    def __init__(self, cfg: SidConfig) -> None:
        super().__init__(cfg)
        self.model: Optional[RQVAEModel] = None
        self.in_dim: Optional[int] = None
        self.history: list[dict] = []

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.cfg.codebook_size] * self.cfg.levels

    def _build(self, in_dim: int) -> RQVAEModel:
        v = self.cfg.rq_vae
        self.in_dim = in_dim
        self.model = RQVAEModel(in_dim, list(v.hidden_dims), v.latent_dim, self.cfg.levels, self.cfg.codebook_size)
        return self.model

    @torch.no_grad()
    def _kmeans_init(self, x: torch.Tensor) -> None:
        assert self.model is not None
        r = self.model.encoder(x)
        for lvl in range(self.cfg.levels):
            c = kmeans(r.numpy(), self.cfg.codebook_size, 25, self.cfg.seed + lvl, 256)
            book = self.model.codebooks.data[lvl]
            book[: c.shape[0]] = torch.from_numpy(c)
            idx = RQVAEModel.nearest(r, book)
            r = r - book[idx]

    @torch.no_grad()
    def _restart_dead(self, x: torch.Tensor, gen: torch.Generator) -> int:
        """Move codes used by no item onto random current residuals; return how many moved."""
        assert self.model is not None
        z = self.model.encoder(x)
        _, codes, _, residuals = self.model.quantize(z)
        moved = 0
        for lvl in range(self.cfg.levels):
            used = torch.bincount(codes[:, lvl], minlength=self.cfg.codebook_size) > 0
            dead = (~used).nonzero().flatten()
            if dead.numel() == 0:
                continue
            pick = torch.randint(0, x.shape[0], (dead.numel(),), generator=gen)
            noise = torch.randn(dead.numel(), z.shape[1], generator=gen) * 1e-3
            self.model.codebooks.data[lvl, dead] = residuals[lvl][pick] + noise
            moved += int(dead.numel())
        return moved

    def fit(self, emb: np.ndarray, popularity: Optional[np.ndarray] = None) -> "RQVAE":
        v = self.cfg.rq_vae
        torch.manual_seed(self.cfg.seed)
        gen = torch.Generator().manual_seed(self.cfg.seed)
        x = torch.from_numpy(np.ascontiguousarray(emb, np.float32))
        model = self._build(x.shape[1])
        if v.kmeans_init:
            self._kmeans_init(x)
        opt = torch.optim.Adam(model.parameters(), lr=v.lr)
        n = x.shape[0]
        self.history = []
        for epoch in range(v.epochs):
            perm = torch.randperm(n, generator=gen)
            tot = {"recon": 0.0, "codebook": 0.0, "commit": 0.0}
            for s in range(0, n, v.batch_size):
                xb = x[perm[s: s + v.batch_size]]
                z = model.encoder(xb)
                zq, _, vq, _ = model.quantize(z)
                z_st = z + (zq - z).detach()
                recon = ((model.decoder(z_st) - xb) ** 2).sum(1).mean()
                loss = recon + vq[0] + v.beta * vq[1]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                w = xb.shape[0] / n
                tot["recon"] += recon.item() * w
                tot["codebook"] += vq[0].item() * w
                tot["commit"] += vq[1].item() * w
            restarted = 0
            if v.dead_code_every > 0 and (epoch + 1) % v.dead_code_every == 0 and epoch + 1 < v.epochs:
                restarted = self._restart_dead(x, gen)
            self.history.append({"epoch": epoch, **tot, "restarted_codes": restarted})
        return self

    def _check(self) -> RQVAEModel:
        if self.model is None:
            raise RuntimeError("rq_vae: call fit() before encode()")
        return self.model

    @torch.no_grad()
    def encode(self, emb: np.ndarray) -> SidCodes:
        model = self._check()
        x = torch.from_numpy(np.ascontiguousarray(emb, np.float32))
        codes = []
        for s in range(0, x.shape[0], 65536):
            _, c, _, _ = model.quantize(model.encoder(x[s: s + 65536]))
            codes.append(c)
        return SidCodes.fixed(torch.cat(codes).numpy().astype(np.int32), self.codebook_sizes)

    @torch.no_grad()
    def last_level_candidates(self, emb: np.ndarray, codes: SidCodes, topn: int) -> tuple[np.ndarray, np.ndarray]:
        model = self._check()
        r = model.encoder(torch.from_numpy(np.ascontiguousarray(emb, np.float32)))
        last = torch.from_numpy(codes.lengths.astype(np.int64) - 1)
        c = torch.from_numpy(codes.codes.astype(np.int64))
        for lvl in range(model.codebooks.shape[0]):
            sel = last > lvl
            r[sel] -= model.codebooks[lvl][c[sel, lvl]]
        cand = torch.empty(r.shape[0], topn, dtype=torch.int64)
        dist = torch.empty(r.shape[0], topn)
        for lvl in last.unique().tolist():
            sel = last == lvl
            book = model.codebooks[lvl]
            rr = r[sel]
            d = (rr * rr).sum(1, keepdim=True) - 2 * rr @ book.T + (book * book).sum(1)[None, :]
            dd, ii = d.topk(min(topn, book.shape[0]), dim=1, largest=False)
            cand[sel], dist[sel] = ii, dd
        return cand.numpy(), dist.numpy()

    def _save_state(self, directory: Path) -> None:
        from safetensors.torch import save_file

        model = self._check()
        with atomic_path(directory / "rq_vae.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        with atomic_path(directory / "rq_vae_meta.json") as tmp:
            tmp.write_text(json.dumps({"in_dim": self.in_dim, "history_tail": self.history[-5:]}))

    def _load_state(self, directory: Path) -> None:
        from safetensors.torch import load_file

        meta = json.loads((directory / "rq_vae_meta.json").read_text())
        model = self._build(int(meta["in_dim"]))
        model.load_state_dict(load_file(str(directory / "rq_vae.safetensors")))
