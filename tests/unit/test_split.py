"""The split stage and the Dolly loader (data/dolly.py, stages/split.py): malformed rows
quarantined with line and reason, loaders that agree, the paper's split sizes, stratified and
seeded partitions."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth_ray.data.dolly import (
    check_row,
    load_dataset,
    resolve_dataset,
    split_rows,
    validation_mask,
)
from synth_ray.prompts import chat_messages, user_turn


def write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def good(i: int, cat: str = "open_qa") -> bytes:
    return json.dumps(
        {"instruction": f"Question {i}?", "context": "", "response": f"Answer {i}.",
         "category": cat}
    ).encode()


def test_malformed_rows_are_quarantined_with_line_and_reason(tmp_path) -> None:
    f = tmp_path / "d.jsonl"
    write_lines(f, [
        good(1),                                                     # 1 ok
        b'{"instruction": "broken", ',                               # 2 bad JSON
        b'{"instruction": "caf\xe9", "response": "x"}',              # 3 not UTF-8
        json.dumps({"response": "no instruction"}).encode(),         # 4 missing
        json.dumps({"instruction": "q", "response": "   "}).encode(),  # 5 empty
        json.dumps({"instruction": 5, "response": "x"}).encode(),    # 6 wrong type
        json.dumps(["a", "list"]).encode(),                          # 7 not an object
        good(1),                                                     # 8 duplicate instruction
        json.dumps({"instruction": "q9", "response": "r", "context": ["x"]}).encode(),  # 9
        b"",                                                         # 10 blank: ignored
        good(2),                                                     # 11 ok
    ])  # fmt: skip
    res = load_dataset(str(f))
    assert res.rows["instruction"].to_list() == ["Question 1?", "Question 2?"]
    assert res.rows["line"].to_list() == [1, 11]
    reasons = dict(zip(res.rejects["line"].to_list(), res.rejects["reason"].to_list()))
    assert set(reasons) == {2, 3, 4, 5, 6, 7, 8, 9}
    assert reasons[2].startswith("bad JSON")
    assert reasons[3].startswith("not UTF-8")
    assert reasons[4] == "missing 'instruction'"
    assert reasons[5] == "empty 'response'"
    assert reasons[6] == "'instruction' is int, not a string"
    assert reasons[7] == "row is a list, not an object"
    assert reasons[8] == "duplicate instruction (first kept at line 1)"
    assert reasons[9] == "'context' is list, not a string"
    # nothing lost: every non-blank line is either a row or a reject
    assert res.rows.height + res.rejects.height == 10


def test_duplicate_explicit_ids_are_rejected() -> None:
    row, _ = check_row({"id": 7, "instruction": "a", "response": "b"})
    assert row["id"] == "7" and row["context"] == "" and row["category"] == "unknown"
    from synth_ray.data.dolly import check_records

    recs = [(1, {"id": "x", "instruction": "a", "response": "b"}, None, ""),
            (2, {"id": "x", "instruction": "c", "response": "d"}, None, "")]
    rows, rejects = check_records(recs)
    assert rows.height == 1 and rejects["reason"][0] == "duplicate id 'x' (first at line 1)"


def test_parquet_and_json_loaders_agree_with_jsonl(tmp_path) -> None:
    jl = load_dataset("tiny://dolly-sample")
    cols = ["instruction", "context", "response", "category"]
    pq = tmp_path / "d.parquet"
    jl.rows.select(cols).write_parquet(pq)
    js = tmp_path / "d.json"
    js.write_text(json.dumps(jl.rows.select(cols).to_dicts()))
    for path in (pq, js):
        other = load_dataset(str(path))
        assert other.rows.select(["id", *cols]).equals(jl.rows.select(["id", *cols]))


def test_bundled_sample_covers_dolly_categories() -> None:
    res = load_dataset("tiny://dolly-sample")
    assert res.rows.height >= 300
    assert set(res.rows["category"]) == {
        "open_qa", "general_qa", "classification", "closed_qa", "brainstorming",
        "information_extraction", "summarization", "creative_writing",
    }  # fmt: skip


def test_missing_local_file_and_offline_hub(monkeypatch, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        resolve_dataset(str(tmp_path / "nope.jsonl"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not fetch dataset 'databricks/databricks-dolly"):
        resolve_dataset("databricks/databricks-dolly-15k")


def _rows(n: int, n_cats: int = 8) -> pl.DataFrame:
    return pl.DataFrame({
        "id": [f"r{i}" for i in range(n)],
        "instruction": [f"q{i}" for i in range(n)],
        "category": [f"c{(i * 7919) % n_cats}" for i in range(n)],
    })  # fmt: skip


def test_paper_split_sizes() -> None:
    """Dolly-15k's 15,011 rows give 1,502 test rows and parts 3,377/3,377/3,377/3,378."""
    rows = _rows(15_011)
    test, parts = split_rows(rows, seed=42)
    assert test.height == 1_502
    assert [p.height for p in parts] == [3_377, 3_377, 3_377, 3_378]


def test_split_is_stratified() -> None:
    rows = _rows(4_000, n_cats=5)
    test, parts = split_rows(rows, seed=1)
    overall = Counter(rows["category"])
    for df, share in [(test, 0.1)] + [(p, 0.9 / 4) for p in parts]:
        got = Counter(df["category"])
        for cat, n in overall.items():
            assert abs(got[cat] - n * share) <= 1.5, (cat, got[cat], n * share)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(8, 600), parts=st.integers(1, 6), frac=st.floats(0.05, 0.5),
       seed=st.integers(0, 10_000))
def test_split_partitions_rows(n, parts, frac, seed) -> None:
    rows = _rows(n, n_cats=3)
    if n - math.ceil(n * frac) < parts:
        with pytest.raises(ValueError):
            split_rows(rows, seed, frac, parts)
        return
    test, ps = split_rows(rows, seed, frac, parts)
    ids = test["id"].to_list() + [i for p in ps for i in p["id"].to_list()]
    assert sorted(ids) == sorted(rows["id"].to_list())  # disjoint and complete
    assert test.height == math.ceil(n * frac)
    sizes = [p.height for p in ps]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes)
    assert set(test["part"]) == {0} and [set(p["part"]) for p in ps] == [
        {k} for k in range(1, parts + 1)
    ]


def test_split_depends_on_seed_only() -> None:
    rows = _rows(500)
    a, pa = split_rows(rows, seed=42)
    b, pb = split_rows(rows, seed=42)
    c, _ = split_rows(rows, seed=43)
    assert a.equals(b) and all(x.equals(y) for x, y in zip(pa, pb))
    assert not a.equals(c)


def test_validation_mask() -> None:
    ids = [str(i) for i in range(200)]
    m = validation_mask(ids, 0.05, seed=42)
    assert m.sum() == 10
    assert (m == validation_mask(ids, 0.05, seed=42)).all()
    assert validation_mask(ids[:3], 0.05, 1).sum() == 1
    assert validation_mask(ids, 0.0, 1).sum() == 0


@pytest.mark.parametrize("n", [13509, 200, 37])
def test_validation_is_hugging_face_datasets_train_test_split(n) -> None:
    """The authors' fine-tuning held out `train_test_split(test_size=0.05, seed=42)` of
    `datasets`: 676 of their 13,509 rows. The same rows, by datasets' own split."""
    from datasets import Dataset

    theirs = Dataset.from_dict({"i": list(range(n))}).train_test_split(test_size=0.05,
                                                                       seed=42)
    mine = validation_mask([str(i) for i in range(n)], 0.05, seed=42)
    assert sorted(theirs["test"]["i"]) == [int(i) for i in np.flatnonzero(mine)]
    if n == 13509:
        assert mine.sum() == 676


def test_user_turn_and_system_folding() -> None:
    assert user_turn("Do X.", "") == "Do X."
    assert user_turn("Do X.", "Some text.") == "Do X.\n\nCONTEXT:\nSome text."
    sys_msgs = chat_messages("Do X.", "", "Be nice.", "system")
    assert sys_msgs == [{"role": "system", "content": "Be nice."},
                        {"role": "user", "content": "Do X."}]
    folded = chat_messages("Do X.", "", "Be nice.", "fold")
    assert folded == [{"role": "user", "content": "Be nice.\n\nDo X."}]


def test_huge_fields_are_quarantined_and_extra_columns_named(tmp_path) -> None:
    f = tmp_path / "d.jsonl"
    huge = "word " * 30_000  # 150,000 characters
    write_lines(f, [
        good(1),
        json.dumps({"instruction": "Q2?", "response": huge}).encode(),
        json.dumps({"instruction": "Q3?", "response": "ok", "context": huge}).encode(),
        json.dumps({"instruction": "Q4?", "response": "ok", "source_url": "x",
                    "votes": 3}).encode(),
    ])  # fmt: skip
    res = load_dataset(str(f), max_chars=100_000)
    assert res.rows["instruction"].to_list() == ["Question 1?", "Q4?"]
    reasons = dict(zip(res.rejects["line"].to_list(), res.rejects["reason"].to_list()))
    assert reasons == {2: "'response' is 149,999 characters, over dataset.max_chars (100,000)",
                       3: "'context' is 149,999 characters, over dataset.max_chars (100,000)"}
    assert res.notes == ["ignored column(s) synth-ray does not read: 'source_url' (1 rows), "
                         "'votes' (1 rows)"]
    assert load_dataset(str(f), max_chars=None).rows.height == 4  # no limit: all kept
