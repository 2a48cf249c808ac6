"""SA²CRQ with the RQ-VAE flavour (``sa2crq_vae``): adaptive length and the anchored curriculum in a learned latent.

Stage 1 trains the TIGER RQ-VAE (encoder, decoder, L × K codebooks; rl_align/sid/rq_vae.py) on the **head**
items only and takes the prefix masses from their codes. Stage 2 freezes the encoder and the head codebooks and,
level by level, learns ``K_tail`` new codewords on the tail items' latent residuals (k-means: the optimum of the
codebook loss with everything else frozen), giving hybrid L × (K + K_tail) codebooks. Every item — head, tail,
cold — is encoded by the frozen encoder and the hybrid codebooks, and cut by SARQ's stop rule on the head
priors, exactly as in the k-means flavour (rl_align/sid/sa2crq.py). With ``sa2crq.tail_encoder_epochs`` > 0,
stage 2 also trains a *tail encoder* (a copy of the head encoder) on the tail items, with the head decoder, the
head codebooks and the tail codewords frozen (reconstruction through the frozen decoder + commitment), refits
the tail codewords on its latents, and :meth:`fit_encode` encodes the tail items (by popularity) with it. Without the curriculum the RQ-VAE is
trained on every item and only the stop rule is added.

Shapes: ``books`` (L, K_total, latent_dim) float32; the RQ-VAE model's own codebooks stay (L, K, latent_dim).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rl_align.config import SidConfig
from rl_align.sid.base import TOKENIZERS
from rl_align.sid.codes import SidCodes
from rl_align.sid.rq_kmeans import assign, nearest_at_levels
from rl_align.sid.rq_vae import RQVAE, RQVAEModel
from rl_align.sid.sa2crq import Sa2crqSettings, prefix_mass_tables, tables_from_arrays, tables_to_arrays
from rl_align.utils.io import atomic_path, load_npz, write_npz
from rl_align.utils.popularity import head_mask

RQVAE_nearest = RQVAEModel.nearest   # (B, D) residuals, (K, D) codebook → (B,) nearest code


@TOKENIZERS.register("sa2crq_vae")
class Sa2crqVae(Sa2crqSettings, RQVAE):
    """SA²CRQ on an RQ-VAE latent (settings: ``SidConfig.rq_vae`` for the autoencoder, ``SidConfig.sa2crq``)."""


    def __init__(self, cfg: SidConfig) -> None:
        super().__init__(cfg)
        self.tables: Optional[list[tuple[np.ndarray, np.ndarray]]] = None
        self.books: Optional[np.ndarray] = None
        self.tail_encoder: Optional[torch.nn.Module] = None   # sa2crq.tail_encoder_epochs > 0: encodes tail items
        self.head_codebooks: Optional[np.ndarray] = None   # stage-1 copy, to prove stage 2 left it untouched

    @torch.no_grad()
    def _latent(self, emb: np.ndarray, encoder: Optional[torch.nn.Module] = None, chunk: int = 65536) -> np.ndarray:
        """(n, latent_dim) float32 outputs of ``encoder`` (default: the model's, the head encoder)."""
        enc = RQVAE._check(self).encoder if encoder is None else encoder
        x = torch.from_numpy(np.ascontiguousarray(emb, np.float32))
        return torch.cat([enc(x[a: a + chunk]) for a in range(0, x.shape[0], chunk)]).numpy()

    def fit(self, emb: np.ndarray, popularity: Optional[np.ndarray] = None) -> "Sa2crqVae":
        """Stage 1: RQ-VAE on the head + head priors; stage 2: frozen encoder/head codes, new tail codewords."""
        cfg, s = self.cfg, self.cfg.sa2crq
        n = emb.shape[0]
        pop, head = self._head(n, popularity)
        h_idx = np.flatnonzero(head)
        RQVAE.fit(self, emb[h_idx])
        model = RQVAE._check(self)
        K, Kt, L = cfg.codebook_size, self._k_total, cfg.levels
        head_books = model.codebooks.detach().numpy().astype(np.float32)
        self.head_codebooks = head_books.copy()
        books = np.full((L, Kt, head_books.shape[2]), 1e6, np.float32)   # unused codes parked far away
        books[:, :K] = head_books
        z = self._latent(emb[h_idx])
        head_codes = np.empty((h_idx.size, L), np.int32)
        for lvl in range(L):
            _, idx = assign(z, books[lvl, :K])
            head_codes[:, lvl] = idx[:, 0]
            z -= books[lvl][idx[:, 0]]
        w = pop[h_idx] if s.mass == "popularity" else np.ones(h_idx.size)
        self.tables = prefix_mass_tables(head_codes, w, Kt)
        t_idx = np.flatnonzero(~head)
        self.tail_encoder = None
        if s.curriculum and t_idx.size:
            m = min(t_idx.size, self._k_tail * cfg.max_points_per_centroid)
            pick = np.sort(np.random.default_rng(cfg.seed).choice(t_idx, m, replace=False)) if m < t_idx.size \
                else t_idx
            self._fit_tail_codewords(self._latent(emb[pick]), books)
            if s.tail_encoder_epochs:
                self.tail_encoder = self._train_tail_encoder(emb[t_idx], books)
                self._fit_tail_codewords(self._latent(emb[pick], self.tail_encoder), books)
            if s.priors == "hybrid":   # head items keep the head encoder
                self._hybrid_priors(self._latent(emb[h_idx]), w, books)
        self.books = books
        return self

    def _train_tail_encoder(self, x_tail: np.ndarray, books: np.ndarray) -> torch.nn.Module:
        """A copy of the encoder trained on tail items (m, d) against the frozen decoder and hybrid ``books``
        (L, K_total, D): loss = ‖decoder(z_q) − x‖² + β ‖z − sg(z_q)‖², straight-through, greedy residual codes.
        Only the copy's weights change (the model's parameters are frozen for the duration)."""
        model, v = RQVAE._check(self), self.cfg.rq_vae
        enc = copy.deepcopy(model.encoder)
        frozen = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in frozen:
            p.requires_grad_(False)
        B = torch.from_numpy(books)
        x = torch.from_numpy(np.ascontiguousarray(x_tail, np.float32))
        opt = torch.optim.Adam(enc.parameters(), lr=v.lr)
        gen = torch.Generator().manual_seed(self.cfg.seed + 7)
        self.tail_history = []
        try:
            for _ in range(self.cfg.sa2crq.tail_encoder_epochs):
                perm, tot = torch.randperm(x.shape[0], generator=gen), 0.0
                for a in range(0, x.shape[0], v.batch_size):
                    xb = x[perm[a: a + v.batch_size]]
                    z = enc(xb)
                    r, zq = z.detach(), torch.zeros_like(z)
                    for lvl in range(B.shape[0]):
                        e = B[lvl][RQVAE_nearest(r, B[lvl])]
                        zq, r = zq + e, r - e
                    recon = ((model.decoder(z + (zq - z).detach()) - xb) ** 2).sum(1).mean()
                    loss = recon + v.beta * ((z - zq) ** 2).sum(1).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += recon.item() * xb.shape[0] / x.shape[0]
                self.tail_history.append(tot)
        finally:
            for p, req in frozen:
                p.requires_grad_(req)
        return enc.eval()

    def _tail_codes(self, emb: np.ndarray, popularity: Optional[np.ndarray], codes: SidCodes) -> SidCodes:
        """With a tail encoder: the tail items' codes from its latents (same hybrid books and stop rule)."""
        if getattr(self, "tail_encoder", None) is None:
            return codes
        tail = np.flatnonzero(~head_mask(np.asarray(popularity, np.float64), self.cfg.sa2crq.head_share))
        tc = self._encode_rows(lambda a, b: self._latent(emb[tail[a:b]], self.tail_encoder), tail.size,
                               self._hybrid(), 65536)
        arr, lengths = codes.codes.copy(), codes.lengths.copy()
        arr[tail], lengths[tail] = tc.codes, tc.lengths
        return SidCodes(arr, lengths, codes.codebook_sizes)

    def _hybrid(self) -> np.ndarray:
        if self.books is None or self.tables is None:
            raise RuntimeError("sa2crq_vae: call fit() before encode()")
        return self.books

    def encode(self, emb: np.ndarray, chunk: int = 65536) -> SidCodes:
        """Frozen encoder → greedy residual codes under the hybrid codebooks, cut by the stop rule."""
        return self._encode_with(emb, self._hybrid(), chunk)

    def _encode_with(self, emb: np.ndarray, books: np.ndarray, chunk: int = 65536) -> SidCodes:
        """Codes of (n, d) ``emb`` (frozen encoder) under ``books`` (L, K_total, latent_dim), cut by the stop rule."""
        return self._encode_rows(lambda a, b: self._latent(emb[a:b]), emb.shape[0], books, chunk)

    def _hybrid_books(self) -> np.ndarray:
        return self._hybrid()

    def last_level_candidates(self, emb: np.ndarray, codes: SidCodes, topn: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest hybrid codes at each item's last level, given its (frozen) prefix."""
        books = self._hybrid()
        r = self._latent(emb)
        last = codes.lengths.astype(np.int64) - 1
        for lvl in range(books.shape[0]):
            sel = last > lvl
            r[sel] -= books[lvl][codes.codes[sel, lvl]]
        return nearest_at_levels(r, last, books, topn)

    def _save_state(self, directory: Path) -> None:
        from safetensors.torch import save_file

        RQVAE._save_state(self, directory)
        write_npz(directory / "sa2crq_vae.npz", books=self._hybrid(), head_codebooks=self.head_codebooks,
                  **tables_to_arrays(self.tables))
        if getattr(self, "tail_encoder", None) is not None:
            with atomic_path(directory / "tail_encoder.safetensors") as tmp:
                save_file({k: v.contiguous() for k, v in self.tail_encoder.state_dict().items()}, str(tmp))

    def _load_state(self, directory: Path) -> None:
        RQVAE._load_state(self, directory)
        z = load_npz(directory / "sa2crq_vae.npz")
        self.books = z["books"].astype(np.float32)
        self.head_codebooks = z["head_codebooks"].astype(np.float32)
        self.tables = tables_from_arrays(z, self.books.shape[0])
        self.tail_encoder = None
        if (directory / "tail_encoder.safetensors").exists():
            from safetensors.torch import load_file

            self.tail_encoder = copy.deepcopy(RQVAE._check(self).encoder)
            self.tail_encoder.load_state_dict(load_file(str(directory / "tail_encoder.safetensors")))
            self.tail_encoder.eval()
