"""Prompts and training windows as SID token sequences.

A sequence is ``<bos>`` followed by items, each written as its SID tokens and
an ``<eos>``: ``<bos> a_3 b_17 c_0 <eos> a_9 b_2 c_5 <eos> ...``. A prompt is the
history part; the policy then generates the next item's SID and ``<eos>``, so
constrained decoding always starts at the trie root.

With ``sid.history: items`` a history item is one token (``<bos> <i_41> <i_7> ...``, SASRec's one position per
item) and only the generated item is written as SID tokens. A training window then packs every target's SID
after the shared history (:func:`item_history_batch`): a custom attention mask lets target j's SID tokens see
``<bos>``, the user tokens and the history tokens of the items before j, and its own earlier tokens, with the
position ids a serving prompt would give them, so one forward pass trains every target of a window exactly as it
is decoded.
"""

from __future__ import annotations

import numpy as np
import torch

from rl_align.sid.catalog import BOS, PAD, SidCatalog

IGNORE = -100


def _pack(items: np.ndarray, catalog: SidCatalog, left_pad: bool, prefix: np.ndarray | None = None,
          as_history: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N, W) item indices (-1 = none) → (N, 1 + F + W*T) tokens: <bos>, the (N, F) ``prefix`` tokens (user
    tokens; none when None), then the items' tokens (their SID and <eos>, or with ``as_history`` their one
    history token, ``sid.history: items``); padded left or right.

    Returns:
        tokens (N, P) int64 and the per-token item slot (N, P) int64 (-1 for <bos>/prefix/<pad>).
    """
    N, W = items.shape
    prefix = np.zeros((N, 0), np.int64) if prefix is None else np.asarray(prefix, np.int64)
    F = prefix.shape[1]
    if as_history:
        tok = catalog.history_tokens(np.arange(catalog.n_items))[:, None]  # (n_items, 1)
        lengths = np.ones(catalog.n_items, np.int64)
    else:
        tok, lengths = catalog.tokens, catalog.token_lengths  # (n_items, T) with <eos> then <pad>
    T = tok.shape[1]
    safe = np.where(items >= 0, items, 0)
    per = tok[safe]  # (N, W, T)
    valid = (np.arange(T)[None, None, :] < lengths[safe][:, :, None]) & (items >= 0)[:, :, None]
    slot = np.broadcast_to(np.arange(W)[None, :, None], (N, W, T))
    flat_valid = valid.reshape(N, W * T)
    counts = flat_valid.sum(1)
    P = 1 + F + (int(counts.max()) if N else 0)
    out = np.full((N, P), PAD, np.int64)
    out_slot = np.full((N, P), -1, np.int64)
    start = (P - 1 - F - counts) if left_pad else np.zeros(N, np.int64)  # column of each row's <bos>
    out[np.arange(N), start] = BOS
    if F:
        out[np.arange(N)[:, None], start[:, None] + 1 + np.arange(F)[None, :]] = prefix
    # destination column of every valid token: after <bos> and the prefix, in order
    pos = np.cumsum(flat_valid, axis=1) + F + start[:, None]
    rows = np.broadcast_to(np.arange(N)[:, None], flat_valid.shape)
    out[rows[flat_valid], pos[flat_valid]] = per.reshape(N, W * T)[flat_valid]
    out_slot[rows[flat_valid], pos[flat_valid]] = slot.reshape(N, W * T)[flat_valid]
    return out, out_slot


def build_prompts(history: np.ndarray, catalog: SidCatalog,
                  users: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts for decoding.

    Args:
        history: (N, H) item indices, oldest first, -1 padded (any side).
        users: (N,) dense user index of each prompt (-1 = unknown): needed when the catalog has user tokens.

    Returns:
        input_ids (N, P) int64 and attention_mask (N, P) int64.
    """
    history = np.asarray(history, np.int64)
    if history.size and history.max() >= catalog.n_items:
        raise KeyError(f"history item index {int(history.max())} is outside the catalog ({catalog.n_items} items)")
    # move padding to the left so items stay in order
    order = np.argsort(history >= 0, axis=1, kind="stable")
    hist = np.take_along_axis(history, order, axis=1)
    ids, _ = _pack(hist, catalog, left_pad=True, prefix=catalog.prefix_tokens(users),
                   as_history=catalog.history_items)
    ids_t = torch.from_numpy(ids)
    return ids_t, (ids_t != PAD).long()


def prompts_from_raw(histories: list[list[str]], catalog: SidCatalog, max_history: int,
                     users: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts from raw item ids (and (N,) dense user indices for user tokens, -1 = a user the catalog does not
    know); an id missing from the catalog raises KeyError naming it and the row."""
    H = max(1, min(max_history, max((len(h) for h in histories), default=1)))
    arr = np.full((len(histories), H), -1, np.int64)
    for r, h in enumerate(histories):
        h = h[-max_history:]
        for j, iid in enumerate(h):
            try:
                arr[r, H - len(h) + j] = catalog.index_of(iid)
            except KeyError as e:
                raise KeyError(f"history row {r}, position {j}: {e.args[0]}") from None
    return build_prompts(arr, catalog, users)


def strided_windows(seq_items: np.ndarray, seq_offsets: np.ndarray, train_len: np.ndarray, window: int,
                    stride: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``window`` items whose *targets* are chunks of ``stride`` items (overlapping when stride < window).

    ``stride`` None (= ``window``) is the non-overlapping cut: every item of a window is a target, and a target sees
    0 to ``window - 1`` items of history.

    Each user's training items are cut into chunks of ``stride`` items (the cut points shift by a random offset per
    call), so every training item is a target exactly once. A chunk's window is the chunk and the ``window - stride``
    items before it (fewer at a sequence's start; the chunk nearest a cut offset may be shorter than ``stride``),
    context only, so every target sees at least ``window - stride`` items of history (or all there is) instead of
    0 to ``window - 1`` as in non-overlapping windows: closer to serving, where a prompt is a full history.

    Args:
        seq_items, seq_offsets: users' time-sorted sequences (CSR).
        train_len: (n_users,) how many leading items of each sequence are training data.
        window: items per window; stride: target items per window (1 ≤ stride ≤ window; None = window).

    Returns:
        windows (M, window) item indices, -1 padded at the front of short windows, and n_target (M,): the last
        ``n_target`` items of each window are its targets, the others context.
    """
    stride = window if stride is None else stride
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")
    rows, n_target = [], []
    for u in range(seq_offsets.shape[0] - 1):
        n = int(train_len[u])
        if n < 2:
            continue
        seq = seq_items[seq_offsets[u]: seq_offsets[u] + n]
        shift = int(rng.integers(0, stride))
        # chunk boundaries: n, then n - shift (or n - stride), then every `stride` items back to 0
        bounds = [n]
        b = n - (shift if shift else stride)
        while b > 0:
            bounds.append(b)
            b -= stride
        bounds.append(0)
        for e, s in zip(bounds[:-1], bounds[1:]):
            c = max(0, s - (window - stride))  # window - stride context items before the chunk
            w = np.full(window, -1, np.int64)
            w[window - (e - c):] = seq[c:e]
            rows.append(w)
            n_target.append(e - s)
    if not rows:
        return np.zeros((0, window), np.int64), np.zeros(0, np.int64)
    return np.stack(rows), np.asarray(n_target, np.int64)


def shuffled_training_events(split: dict, window: int, stride: int | None,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's training windows of a run's split (:func:`strided_windows`), in a random order, as *event*
    indices: positions in ``split["seq_items"]`` (-1 = padding), so per-event data (e.g. a teacher's targets,
    :mod:`rl_align.sft.distill`) can be looked up. ``split["seq_items"][events]`` are the items.

    The last two events of every user (valid and test) are never in a window.

    Returns:
        events (M, window) int64 and n_target (M,): how many trailing items of each window are targets.
    """
    train_len = np.diff(split["seq_offsets"]) - 2
    positions = np.arange(len(split["seq_items"]), dtype=np.int64)
    w, n_target = strided_windows(positions, split["seq_offsets"], train_len, window, stride, rng)
    perm = rng.permutation(w.shape[0])
    return w[perm], n_target[perm]


def drop_events(events: np.ndarray, n_target: np.ndarray, p: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Item deletion, a sequence augmentation: each entry of each window but its last is removed with probability
    ``p`` (it is then neither context nor target); the rest keep their order, so a later target sees a history
    with gaps, as a user whose log missed an event would give.

    Args:
        events: (M, W) event or item indices, -1 = padding. n_target: (M,) trailing targets per window.
    Returns:
        (M, W) with removed entries set to -1 (``windows_to_batch`` packs what is left) and (M,) the targets left.
    """
    if p <= 0:
        return events, n_target
    present = events >= 0
    last = events.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)   # column of each window's last entry
    drop = present & (rng.random(events.shape) < p)
    drop[np.arange(len(events)), last] = False
    first_target = present.sum(1) - n_target                         # rank of the first target among the entries
    rank = np.cumsum(present, axis=1) - 1                            # each entry's rank in its window
    dropped_targets = (drop & (rank >= first_target[:, None])).sum(1)
    return np.where(drop, -1, events), n_target - dropped_targets


def events_to_items(events: np.ndarray, seq_items: np.ndarray) -> np.ndarray:
    """(M, W) event indices (-1 = padding) → (M, W) item indices (-1 = padding)."""
    return np.where(events >= 0, np.asarray(seq_items, np.int64)[np.maximum(events, 0)], -1)


def events_to_users(events: np.ndarray, seq_offsets: np.ndarray) -> np.ndarray:
    """(M, W) event indices of one user's window each (-1 = padding) → (M,) that user's dense index."""
    first = np.where(events >= 0, events, np.iinfo(np.int64).max).min(1)
    return np.searchsorted(np.asarray(seq_offsets, np.int64), first, side="right") - 1


def left_aligned(windows: np.ndarray) -> np.ndarray:
    """(M, W) windows (items or events, -1 = padding anywhere) with their entries moved to the front, in order:
    slot j of the result is the j-th item of the packed sequence :func:`windows_to_batch` builds."""
    return np.take_along_axis(windows, np.argsort(windows < 0, axis=1, kind="stable"), axis=1)


def right_aligned(windows: np.ndarray) -> np.ndarray:
    """(M, W) windows (-1 = padding anywhere) with their entries moved to the back, in order: the layout of
    :func:`strided_windows` and of the item-ID models' inputs."""
    return np.take_along_axis(windows, np.argsort(windows >= 0, axis=1, kind="stable"), axis=1)


def windows_to_batch(windows: np.ndarray, catalog: SidCatalog, n_target: np.ndarray | None = None,
                     users: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """(M, W) item windows → right-padded ``input_ids``, ``attention_mask`` and ``labels`` (M, P).

    Every SID and <eos> token of a target item is a target; <bos>, the user tokens (of ``users`` (M,), the user of
    each window: needed when the catalog has them), padding and the tokens of context items (all but the last
    ``n_target`` (M,) items of a window, :func:`strided_windows`; None = every item is a target) are ignored (-100).
    """
    if catalog.history_items:
        return item_history_batch(windows, catalog, n_target, users)
    w = left_aligned(windows)  # items start right after <bos> and the user tokens
    ids, slot = _pack(w, catalog, left_pad=False, prefix=catalog.prefix_tokens(users))
    first = np.zeros(len(w), np.int64) if n_target is None else (w >= 0).sum(1) - n_target  # first target slot
    labels = np.where(slot >= first[:, None], ids, IGNORE)
    ids_t = torch.from_numpy(ids)
    return {"input_ids": ids_t, "attention_mask": (ids_t != PAD).long(), "labels": torch.from_numpy(labels)}


def _packed_row(items: np.ndarray, first: int, catalog: SidCatalog, prefix: np.ndarray):
    """One window's packed layout (:func:`item_history_batch`): items (n,) in order, targets from slot ``first``.

    Returns:
        five (P_row,) int64 arrays: tokens, position ids, targets (-100 = none), the last shared column each
        column may see, and its block (the target slot j of a SID token, -1 for the shared part).
    """
    F, n = len(prefix), len(items)
    shared = np.concatenate([[BOS], prefix, catalog.history_tokens(items[:-1])]).astype(np.int64)
    S = len(shared)  # <bos> + F prefix + n - 1 history tokens; column c has position c
    tok, pos, tgt, see, blk = [shared], [np.arange(S)], [np.full(S, IGNORE)], [np.arange(S)], [np.full(S, -1)]
    for j in range(first, n):
        sid = catalog.tokens[items[j], : catalog.token_lengths[items[j]]]  # codes then <eos>
        tgt[0][F + j] = sid[0]  # the prompt's last token (history token of item j - 1, or the prefix) predicts it
        k = len(sid) - 1  # code tokens as inputs; the last one predicts <eos>
        tok.append(sid[:-1])
        pos.append(F + j + 1 + np.arange(k))
        tgt.append(sid[1:])
        see.append(np.full(k, F + j))  # the shared columns of target j's prompt: 0 .. F + j
        blk.append(np.full(k, j))
    return (np.concatenate(tok), np.concatenate(pos), np.concatenate(tgt), np.concatenate(see),
            np.concatenate(blk))


def item_history_batch(windows: np.ndarray, catalog: SidCatalog, n_target: np.ndarray | None = None,
                       users: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """(M, W) item windows → a packed ``sid.history: items`` batch: every target's SID after the shared history.

    Row layout: ``<bos>``, the user tokens, the history tokens of all but the last item (positions 0 .. S-1),
    then, for each target item j (the last ``n_target`` (M,) of the window; None = all), its SID tokens but the
    final ``<eos>`` at positions F + j + 1, F + j + 2, ... (F user tokens): what a serving prompt of the j items
    before it would give them. Target j's first token is predicted by the prompt's last shared column, each SID
    token predicts the next one, the last code predicts ``<eos>``.

    Returns:
        ``input_ids`` (M, P), ``attention_mask`` (M, 1, P, P) bool (True = may attend: a shared column sees the
        shared columns up to itself; a SID token sees its prompt's shared columns and its own block up to itself;
        padding sees itself), ``position_ids`` (M, P) and ``targets`` (M, P): the token each column predicts
        (unshifted; -100 = none).
    """
    w = left_aligned(windows)
    prefix = catalog.prefix_tokens(users)
    M = w.shape[0]
    prefix = np.zeros((M, 0), np.int64) if prefix is None else np.asarray(prefix, np.int64)
    n = (w >= 0).sum(1)
    first = np.zeros(M, np.int64) if n_target is None else n - np.asarray(n_target, np.int64)
    rows = [_packed_row(w[r, : n[r]], int(first[r]), catalog, prefix[r]) for r in range(M)]
    P = max(len(t[0]) for t in rows) if rows else 1
    ids = np.full((M, P), PAD, np.int64)
    pos = np.zeros((M, P), np.int64)
    tgt = np.full((M, P), IGNORE, np.int64)
    mask = np.zeros((M, P, P), bool)
    mask[:, np.arange(P), np.arange(P)] = True  # padding attends to itself (no all-masked row: no NaN)
    col = np.arange(P)
    for r, (t, p, g, see, blk) in enumerate(rows):
        L = len(t)
        ids[r, :L], pos[r, :L], tgt[r, :L] = t, p, g
        shared = blk == -1
        c = col[:L]
        # shared key c is visible to query q when c <= see[q]; block key c when it is in q's block and c <= q
        mask[r, :L, :L] = ((c[None, :] <= see[:, None]) & shared[None, :]) | \
            ((blk[:, None] == blk[None, :]) & ~shared[None, :] & (c[None, :] <= c[:, None]))
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask[:, None]),
            "position_ids": torch.from_numpy(pos), "targets": torch.from_numpy(tgt)}


def last_items(seen: np.ndarray, max_len: int) -> torch.Tensor:
    """(N, S) earlier items, left-aligned and -1 padded → (N, max_len) item-ID model tokens of the last ``max_len``
    (item + 1, right-aligned, 0 = padding): the input of SASRec/GRU4Rec and of the SCI query tower."""
    n = (seen >= 0).sum(1)
    out = np.zeros((seen.shape[0], max_len), np.int64)
    for r in range(seen.shape[0]):
        row = seen[r, max(0, n[r] - max_len): n[r]]
        if row.size:
            out[r, max_len - row.size:] = row + 1
    return torch.from_numpy(out)


def item_window_batches(split: dict, L: int, batch_size: int, rng: np.random.Generator, stride: int | None = None,
                        item_drop: float = 0.0, seen: bool = False):
    """One epoch of item-ID (inputs (b, L) tokens, targets (b, L) next item index, -1 = none) from training windows
    of L + 1 items, freshly cut (:func:`strided_windows`; ``stride`` target items per window, None = L + 1, i.e.
    non-overlapping) and shuffled; valid/test events never enter. ``item_drop`` > 0 deletes items as
    :func:`drop_events` does (the survivors are right-aligned again); 0 draws nothing more from ``rng``.
    ``seen``: also yield, third, the (rows, cols) pairs of :func:`earlier_items` for the flattened (b · L) targets,
    the items each target's user had before it (``baseline.seen_mask``)."""
    events, n_target = shuffled_training_events(split, L + 1, stride, rng)
    if item_drop > 0:
        events, n_target = drop_events(events, n_target, item_drop, rng)
        events = right_aligned(events)
    w = events_to_items(events, split["seq_items"])
    is_target = torch.from_numpy(np.arange(1, L + 1)[None, :] >= (L + 1 - n_target)[:, None])  # (M, L)
    for s in range(0, w.shape[0], batch_size):
        b = torch.from_numpy(w[s: s + batch_size])
        inp, tgt = b[:, :-1] + 1, b[:, 1:]
        keep = (inp > 0) & is_target[s: s + batch_size]  # a target needs an item before it; context is not a target
        tgt = torch.where(keep, tgt, torch.full_like(tgt, -1))
        if not seen:
            yield inp, tgt
            continue
        ev = np.where(keep.numpy(), events[s: s + batch_size, 1:], -1).reshape(-1)
        rows, cols = earlier_items(ev, split["seq_items"], split["seq_offsets"], tgt.reshape(-1).numpy())
        yield inp, tgt, (torch.from_numpy(rows), torch.from_numpy(cols))


def earlier_items(first: np.ndarray, seq_items: np.ndarray, seq_offsets: np.ndarray,
                  targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 index pairs: for each event ``first[r]`` (an index into ``seq_items``; -1 = none, no
    pairs), the items of its user's log before it, less row r's own ``targets`` ((N,) or (N, k) items, -1 = none),
    so a repeated item is still a target. These are the items evaluation never ranks for that prompt.
    seq_offsets: (n_users + 1,) the users' sequences (CSR)."""
    first = np.asarray(first, np.int64)
    offsets = np.asarray(seq_offsets, np.int64)
    start = offsets[np.clip(np.searchsorted(offsets, first, side="right") - 1, 0, len(offsets) - 1)]
    n = np.where(first >= 0, first - start, 0)  # events of the user before each target
    rows = np.repeat(np.arange(len(first), dtype=np.int64), n)
    pos = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n) + np.repeat(start, n)
    cols = np.asarray(seq_items, np.int64)[pos]
    tgt = np.asarray(targets, np.int64).reshape(len(first), -1)
    keep = ~(cols[:, None] == tgt[rows]).any(1)
    return rows[keep], cols[keep]
