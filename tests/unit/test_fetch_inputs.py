"""`synth-ray fetch-inputs` (issue 29, item 4): the paper's public inputs fetched into the
files the config names, tested on local copies of the hub repositories in their own layouts
(no network here): CNN/DailyMail's 3.0.0 test parquet, the jailbreak prompts' CSV, Dolly's
JSON lines. The paper config then validates with them; a source in the wrong layout is
named and leaves no file behind."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from synth_ray.cli import app
from synth_ray.config import load_config
from synth_ray.data.fetch import fetch_inputs
from synth_ray.runtime.readiness import problems
from synth_ray.toy.paper_inputs import write_samples
from synth_ray.toy.tiny import SAMPLE_FILES

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "jobs" / "configs" / "paper-8b.yaml"
CLUSTER_RUN = ["run.dir=s3://bucket/runs/paper-8b", "tracking.uri=http://mlflow:5000"]


@pytest.fixture
def hub(tmp_path) -> dict[str, Path]:
    """Local copies of the three hub repositories, each in its repository's layout."""
    rows = [json.loads(x) for x in SAMPLE_FILES["articles"].read_text().splitlines() if x]
    articles = pl.DataFrame([{"article": f"{r['article']} ({i})", "highlights": r["highlights"],
                              "id": f"{i:040x}"} for i in range(150) for r in rows[:1]])
    cnn = tmp_path / "cnn_dailymail" / "3.0.0"
    cnn.mkdir(parents=True)
    articles.write_parquet(cnn / "test-00000-of-00001.parquet")
    articles.with_columns(id="train-" + pl.col("id")).write_parquet(  # not the test split
        cnn / "train-00000-of-00003.parquet")
    jb = tmp_path / "jailbreaks"
    samples = write_samples(tmp_path / "samples")
    jb.mkdir()
    (jb / "ChatGPT-Jailbreak-Prompts.csv").write_bytes(
        samples["judge.jailbreak_templates"].read_bytes())
    dolly = tmp_path / "dolly"
    dolly.mkdir()
    (dolly / "databricks-dolly-15k.jsonl").write_bytes(SAMPLE_FILES["dolly-sample"].read_bytes())
    return {"articles": cnn.parent, "jailbreaks": jb, "dataset": dolly,
            "refusalbench": samples["judge.safety_prompts"]}


def test_fetched_inputs_make_the_paper_config_ready(hub, tmp_path) -> None:
    data = tmp_path / "data"
    at = {"judge.articles": data / "articles.jsonl",
          "judge.jailbreak_templates": data / "jailbreaks.csv"}
    cfg = load_config(PAPER, [*CLUSTER_RUN, *(f"{k}={v}" for k, v in at.items())])
    before = {p.key for p in problems(cfg)}
    assert {"judge.articles", "judge.jailbreak_templates"} <= before  # absent: named
    sources = {k: str(v) for k, v in hub.items() if k != "refusalbench"}
    got = {f.key: f for f in fetch_inputs(cfg, data, sources, articles=100)}
    assert got["judge.articles"].path == at["judge.articles"]
    assert got["judge.safety_prompts"].path is None  # not public: named, never faked
    assert "not public" in got["judge.safety_prompts"].note
    # the articles: 100 distinct rows of the test split (none of the train file's)
    fetched = pl.read_ndjson(at["judge.articles"])
    test = pl.read_parquet(hub["articles"] / "3.0.0" / "test-00000-of-00001.parquet")
    assert fetched.height == 100 and fetched["id"].n_unique() == 100
    assert set(fetched["id"]) <= set(test["id"]) and fetched.columns == ["id", "article",
                                                                         "highlights"]
    # the same seed, the same sample
    again = {f.key: f for f in fetch_inputs(cfg, tmp_path / "again", sources, articles=100)}
    assert again["judge.articles"].path == at["judge.articles"]
    assert pl.read_ndjson(at["judge.articles"]).equals(fetched)
    assert at["judge.jailbreak_templates"].read_bytes() == next(
        hub["jailbreaks"].glob("*.csv")).read_bytes()  # as published
    dolly = got["dataset.path"].path
    assert dolly == data / "databricks--databricks-dolly-15k"  # under --to, never the cwd
    assert (dolly / "databricks-dolly-15k.jsonl").exists()
    assert not list(data.rglob("*.tmp"))
    # with RefusalBench (from its authors) beside them, the paper config is ready
    ready = load_config(PAPER, [*CLUSTER_RUN, *(f"{k}={v}" for k, v in at.items()),
                                f"judge.safety_prompts={hub['refusalbench']}",
                                f"dataset.path={dolly}"])
    assert problems(ready) == []


def test_the_command_exits_2_naming_a_source_in_the_wrong_layout(hub, tmp_path) -> None:
    """A source in another layout: exit 2 naming it, and the inputs fetched before are
    left as they were (nothing half-written, nothing replaced)."""
    data = tmp_path / "data"
    places = [f"judge.jailbreak_templates={data / 'jb.csv'}",
              f"judge.articles={data / 'a.jsonl'}"]
    runner = CliRunner()

    def fetch(*sources: str, articles: str = "10"):
        return runner.invoke(app, ["fetch-inputs", str(PAPER), *places, "--to", str(data),
                                   "--articles", articles,
                                   *[x for src in sources for x in ("--source", src)]])

    good = [f"{k}={hub[k]}" for k in ("articles", "jailbreaks", "dataset")]
    ok = fetch(*good)
    assert ok.exit_code == 0, ok.output
    assert "judge.safety_prompts: not fetched: RefusalBench's JSON is not public" in ok.output
    assert pl.read_ndjson(data / "a.jsonl").height == 10
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    no_columns = tmp_path / "not-jailbreaks"
    no_columns.mkdir()
    (no_columns / "prompts.csv").write_text("title,text\na,b\n")
    out = fetch(good[0], f"jailbreaks={no_columns}", good[2], articles="20")
    assert out.exit_code == 2, out.output
    assert "no CSV with the columns ['Name', 'Prompt', 'Votes']" in out.output
    # articles without their highlights: the loader refuses them, so nothing is replaced
    bad = tmp_path / "bad-cnn" / "3.0.0"
    bad.mkdir(parents=True)
    pl.DataFrame({"id": ["1"], "article": ["a b c"], "highlights": [None]},
                 schema={"id": pl.Utf8, "article": pl.Utf8, "highlights": pl.Utf8}
                 ).write_parquet(bad / "test-00000-of-00001.parquet")
    out = fetch(f"articles={bad.parent}", good[1], good[2], articles="20")
    assert out.exit_code == 2 and "judge.articles" in out.output, out.output
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before
    out = runner.invoke(app, ["fetch-inputs", str(PAPER), "--source", "refusalbench=/x"])
    assert out.exit_code == 2 and "give NAME=FOLDER" in out.output
