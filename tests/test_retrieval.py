"""SCI: the symmetric loss, the dual-view index against exact search, bad inputs, and the CLI end to end on Ray."""

import json

import numpy as np
import pytest
import torch

from rl_align.cli import main
from rl_align.retrieval.index import DualViewIndex, ExactIndex, IvfPqIndex, load_index
from rl_align.retrieval.losses import RETRIEVAL_LOSSES, symmetric_loss
from rl_align.retrieval.towers import DualTower


def _windows(n_items=50, B=6, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    inp = torch.randint(1, n_items + 1, (B, L), generator=g)
    inp[0, :2] = 0  # a short, right-aligned window
    tgt = torch.randint(0, n_items, (B, L), generator=g)
    return inp, torch.where(inp > 0, tgt, torch.full_like(tgt, -1))


@pytest.mark.parametrize("loss", ["hinge", "softmax"])
def test_swap_term_equals_base_term_when_towers_are_tied(loss):
    torch.manual_seed(0)
    model = DualTower(50, 5, hidden=16, dim=8, content=torch.randn(50, 12), dropout=0.0, tied=True)
    inp, tgt = _windows()
    lq = torch.log_softmax(torch.randn(50), 0)
    total, parts = symmetric_loss(model, inp, tgt, lq, loss, 1.0, 0.2, 0.1)
    assert parts["swap"] == pytest.approx(parts["base"], rel=1e-6) and parts["base"] > 0
    assert float(total.detach()) == pytest.approx(2 * parts["base"], rel=1e-6)
    untied = DualTower(50, 5, hidden=16, dim=8, dropout=0.0)
    _, p2 = symmetric_loss(untied, inp, tgt, lq, loss, 1.0, 0.2, 0.1)
    assert p2["swap"] != pytest.approx(p2["base"], rel=1e-3)  # untied towers: the swap term is a new signal


def test_hinge_matches_its_formula_and_skips_duplicate_positives():
    q = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(4, 6), dim=-1)
    items = torch.tensor([3, 5, 3, 7])  # rows 0 and 2 share their positive: not each other's negative
    got = RETRIEVAL_LOSSES.get("hinge")(q, p, items, torch.zeros(4), margin=0.3)
    terms = [max(0.0, 0.3 - float(q[i] @ p[i]) + float(q[i] @ p[j]))
             for i in range(4) for j in range(4) if items[i] != items[j]]
    assert float(got) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def _views(n=3000, d=32, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, d))
    iv = centres[rng.integers(0, 40, n)] + spread * rng.normal(size=(n, d))
    qv = iv + 0.1 * rng.normal(size=(n, d))
    norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")  # noqa: E731
    return norm(qv), norm(iv), norm(qv[:64] + 0.05 * rng.normal(size=(64, d)))


@pytest.mark.parametrize("kind", ["ivfpq", "dual_view"])
def test_index_is_exact_when_every_list_is_probed(kind, tmp_path):
    qv, iv, q = _views()
    ix = IvfPqIndex(iv, 16, None) if kind == "ivfpq" else DualViewIndex(qv, iv, 16, None)
    s_ex, i_ex, dc_ex = ExactIndex(iv).search(q, 20)
    s, i, dc = ix.search(q, 20, nprobe=16)
    assert np.allclose(s, s_ex, atol=1e-5) and (i == i_ex).mean() > 0.99  # equal scores; ties may swap ids
    assert (dc == 16 + 3000).all() and (dc_ex == 3000).all()
    _, _, few = ix.search(q, 20, nprobe=2)
    assert few.mean() < 0.25 * 3000  # a probe of 2 of 16 lists scans far fewer codes
    ix.save(tmp_path / "ix")
    back = load_index(tmp_path / "ix")
    assert (back.search(q, 10, 4)[1] == ix.search(q, 10, 4)[1]).all()


def test_pq_dual_view_recall_grows_with_nprobe():
    qv, iv, q = _views(spread=1.5)
    ix = DualViewIndex(qv, iv, 16, m=8, nbits=6)
    exact = ExactIndex(iv).search(q, 50)[1]
    rec = [np.mean([len(set(a) & set(b)) / 50 for a, b in zip(ix.search(q, 50, p)[1], exact)]) for p in (1, 4, 16)]
    assert rec[0] <= rec[1] <= rec[2] and rec[2] > 0.6 and rec[2] > rec[0]


def test_bad_index_inputs_give_one_clear_line():
    qv, iv, q = _views(n=500)
    cases = [
        (lambda: DualViewIndex(qv, iv[:, :16], 8, None), "dimension 16 does not match the index dimension 32"),
        (lambda: DualViewIndex(qv[:0], iv[:0], 8, None), "cannot build an index from 0 items"),
        (lambda: IvfPqIndex(iv, 8, None).search(q, 10, nprobe=9), "nprobe must lie in [1, nlist=8], got 9"),
        (lambda: ExactIndex(iv).search(q[:, :8], 10), "dimension 8 does not match the index dimension 32"),
        (lambda: ExactIndex(iv[:0]).search(q, 10), "index is empty"),
        (lambda: IvfPqIndex(iv, 8, m=5), "pq m=5 must divide the vector dimension 32"),
    ]
    for fn, text in cases:
        with pytest.raises(ValueError) as e:
            fn()
        assert text in str(e.value) and "\n" not in str(e.value)


def test_retrieval_cli_train_resume_index_search(tmp_path, capsys, ml100k_emb):
    """data → embed → dual tower on Ray Train (ML-100K, 1 epoch), a longer schedule continues from the checkpoint,
    then build-index and search answer for a user."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: t\nretrieval:\n  epochs: 1\n  nlist: 8\n  nprobes: [1, 8]\n  cpus_per_worker: 1\n")
    run = tmp_path / "run"
    assert main(["retrieval", "train", str(cfg), "--run-dir", str(run)]) == 0
    curve = [json.loads(x) for x in (run / "retrieval" / "curve.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in curve] == [1] and curve[0]["valid_hr@50"] > 0.1
    assert main(["retrieval", "train", str(cfg), "--run-dir", str(run), "--set", "retrieval.epochs=2"]) == 0
    curve = [json.loads(x) for x in (run / "retrieval" / "curve.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in curve] == [1, 2]  # epoch 1 was not redone
    res = json.loads((run / "retrieval" / "metrics.json").read_text())
    rows = {(r["index"], r["nprobe"]): r for r in res["test"]}
    assert rows[("exact", 1)]["recall@100"] == 1.0 and rows[("dual_view", 8)]["distance_computations"] == 8 + 1682
    assert rows[("exact", 1)]["hr@100"] > 0.3
    assert main(["retrieval", "build-index", str(run), "--kind", "dual_view"]) == 0
    capsys.readouterr()
    assert main(["retrieval", "search", str(run), "--user", "1", "--index", "dual_view", "--k", "5"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["user"] == "1" and len(row["items"]) == 5 and row["scores"] == sorted(row["scores"], reverse=True)
    assert main(["retrieval", "search", str(run), "--user", "no-such-user"]) == 2
    assert "no-such-user" in capsys.readouterr().err
    # SIDs from the item tower's vectors (sid.vectors: retrieval) in the same run: the codebooks live in its space
    assert main(["sids", "build", str(cfg), "--run-dir", str(run), "--set", "sid.vectors=retrieval",
                 "--set", "sid.codebook_size=16"]) == 0
    books = np.load(run / "sids" / "tokenizer" / "codebooks.npz")["codebooks"]
    assert books.shape[-1] == np.load(run / "retrieval" / "item_view.npy").shape[1] == 64


def test_sids_from_the_retriever_need_it_first(tmp_path):
    from rl_align.checks import load_checked
    from rl_align.config import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text("sid: {vectors: retrieval}\nstages: [data, embed, sids, retrieval]\n")
    with pytest.raises(ConfigError, match="stages: sid.vectors: retrieval needs the retrieval stage before sids"):
        load_checked(cfg)
