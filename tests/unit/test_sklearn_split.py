"""`split.method: sklearn` reproduces the authors' split (PAPER.md, data_cleaning.ipynb): on
a 15,011-row file with Dolly's category counts, and duplicate instructions kept, the test
set and parts are exactly the rows scikit-learn picks when called as the notebook calls it
on a pandas frame."""

from __future__ import annotations

import json

import pandas as pd
import polars as pl
import pytest
from sklearn.model_selection import train_test_split
from typer.testing import CliRunner

from synth_ray.cli import app
from synth_ray.config import ConfigError, load_config

# databricks-dolly-15k's categories (15,011 rows)
DOLLY = {"open_qa": 3742, "general_qa": 2191, "classification": 2136, "closed_qa": 1773,
         "brainstorming": 1766, "information_extraction": 1506, "summarization": 1188,
         "creative_writing": 709}


def dolly_shaped(path) -> pd.DataFrame:
    rows = []
    for cat, n in DOLLY.items():
        for i in range(n):
            # every 50th instruction repeats an earlier one: the authors kept duplicates
            text = f"{cat} question {i - 1 if i % 50 == 49 else i}"
            rows.append({"instruction": text, "context": "", "response": f"answer {i}",
                         "category": cat})
    # shuffled as a real file is, not sorted by category
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=7).reset_index(drop=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")))
    return df


def authors_split(df: pd.DataFrame) -> list[pd.DataFrame]:
    """The notebook's calls: test 10%, then train -> halves -> quarters, seed 42."""
    train, test = train_test_split(df, test_size=0.1, random_state=42, stratify=df["category"])
    a, b = train_test_split(train, test_size=0.5, random_state=42, stratify=train["category"])
    out = [test]
    for half in (a, b):
        x, y = train_test_split(half, test_size=0.5, random_state=42,
                                stratify=half["category"])
        out += [x, y]
    return out


def test_the_split_is_sklearns_on_a_dolly_shaped_file(tmp_path, demo_config_path) -> None:
    data = tmp_path / "dolly.jsonl"
    df = dolly_shaped(data)
    rd = tmp_path / "run"
    r = CliRunner().invoke(app, ["split", str(demo_config_path), f"run.dir={rd}",
                                 f"dataset.path={data}", "dataset.max_rows=null",
                                 "dataset.drop_duplicate_instructions=false",
                                 "split.method=sklearn"])
    assert r.exit_code == 0, r.output
    want = authors_split(df)
    got = [pl.read_parquet(rd / "splits" / "test.parquet")] + [
        pl.read_parquet(rd / "splits" / f"part-{k}.parquet") for k in range(1, 5)]
    assert [g.height for g in got] == [1502, 3377, 3377, 3377, 3378]
    for g, w in zip(got, want):  # the same rows (by their text), in the same order
        assert g["response"].to_list() == w["response"].tolist()
        assert g["instruction"].to_list() == w["instruction"].tolist()
    assert sum(g.height for g in got) == 15011  # duplicates kept: no row lost
    # the default method picks other rows (same sizes): the option matters
    r = CliRunner().invoke(app, ["split", str(demo_config_path), f"run.dir={tmp_path / 'b'}",
                                 f"dataset.path={data}", "dataset.max_rows=null",
                                 "dataset.drop_duplicate_instructions=false"])
    assert r.exit_code == 0, r.output
    other = pl.read_parquet(tmp_path / "b" / "splits" / "test.parquet")
    assert set(other["response"]) != set(got[0]["response"]) or set(
        other["instruction"]) != set(got[0]["instruction"])


def test_sklearn_parts_must_halve(demo_config_path) -> None:
    with pytest.raises(ConfigError, match="split: .*power of two"):
        load_config(demo_config_path, ["split.method=sklearn", "split.num_parts=3"])
