import numpy as np
import pytest

from rl_align.utils.io import atomic_dir, atomic_path, load_npz, read_json, write_json, write_npz


def test_atomic_path_failure_leaves_nothing(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert read_json(target) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    d = tmp_path / "cat"
    with atomic_dir(d) as t:
        (t / "x").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(d) as t:
            (t / "x").write_text("2")
            raise ValueError("boom")
    assert (d / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


def test_npz_refuses_pickles(tmp_path):
    p = tmp_path / "o.npz"
    np.savez(p, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):
        load_npz(p)
    write_npz(tmp_path / "ok.npz", a=np.arange(3))
    assert load_npz(tmp_path / "ok.npz")["a"].tolist() == [0, 1, 2]


def test_read_json_names_file_and_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n "a": }')
    with pytest.raises(ValueError, match=r"bad.json: line 2"):
        read_json(p)
