"""`synth-ray rehearse` of the shipped paper configs, as a user runs it: paper-8b end to end,
then paper-70b in the same run directory (as its comment says: it reuses the 8B run's
generations), ZeRO-3 over two CPU workers. Each exits 0 with every stage done; the report
names every swap and shows the paper tables and the three claims; the hosted sources were
answered over HTTP by the stand-in server with their own keys, and no key value reaches a
file of the run. On one machine: the multi-node rehearsal on nodes that share no disk is
not built yet (issue 30).

CI cost: ~10 min alone (docs/benchmarks.md, "Rehearsals"), one module fixture for all its
tests. It cannot share the suite's grid: what it checks is the paper configs themselves
(their preset, grid, prompt-set designs, judge settings, ZeRO-3 target) through every
stage, which no smaller config stands for."""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml

from .helpers import cli_env, run_cli

pytestmark = pytest.mark.slow
SECRETS = {"HF_TOKEN": "hf-rehearsal-0000", "TOGETHER_API_KEY": "tk-rehearsal-1111",
           "DEEPSEEK_API_KEY": "dk-rehearsal-2222", "OPENAI_API_KEY": "ok-rehearsal-3333",
           "GEMINI_API_KEY": "gk-rehearsal-4444"}
CONFIGS = ("jobs/configs/paper-8b.yaml", "jobs/configs/paper-70b.yaml")


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory) -> dict[str, dict]:
    run = tmp_path_factory.mktemp("rehearsal") / "run"
    out = {}
    for config in CONFIGS:
        proc = run_cli("rehearse", config, f"run.dir={run}", timeout=1200,
                       env=cli_env(**SECRETS))
        out[config] = {"proc": proc, "run": run,
                       "config": yaml.safe_load((run / "config.yaml").read_text()),
                       "report": (run / "report" / "tables.md").read_text(),
                       "manifest": json.loads((run / "manifest.json").read_text())}
    return out


@pytest.mark.parametrize("config", CONFIGS)
def test_the_paper_config_rehearses_to_the_report(rehearsed, config) -> None:
    got = rehearsed[config]
    assert got["proc"].returncode == 0, got["proc"].stderr[-3000:]
    assert all(s["status"] == "done" for s in got["manifest"]["stages"].values()), \
        {n: s["status"] for n, s in got["manifest"]["stages"].items()}
    swaps = got["config"]["rehearsal"]["swaps"]
    assert got["config"]["rehearsal"]["config"] == config
    report = got["report"]
    for s in swaps:  # the report names every swap
        assert f"| `{s['key']}` |" in report
    target = got["config"]["targets"][0]["name"]
    assert "## Paper tables" in report and f"### {target}" in report
    for claim in ("1. multi-source data keeps the outputs broader",
                  "2. synthetic data erodes safety", "3. fine-tuning lowers self-preference"):
        assert claim in report


def test_the_real_settings_ran(rehearsed) -> None:
    run = rehearsed[CONFIGS[1]]["run"]
    summaries = [json.loads(p.read_text())
                 for p in run.glob("adapters/llama-3.1-70b/*/training_summary.json")]
    assert len(summaries) == 7  # the grid: human, single and multi of three brackets
    assert {s.get("strategy") for s in summaries} == {"deepspeed"}
    # the hosted sources: every row answered over HTTP by the stand-in server
    gens = pl.read_parquet(list(run.glob("generations/*.parquet")))
    hosted = gens.filter(pl.col("backend") == "http")
    assert hosted["source"].n_unique() == 4
    assert hosted.filter(pl.col("status") == "error").height == 0


def test_no_key_reaches_the_run(rehearsed) -> None:
    run = rehearsed[CONFIGS[1]]["run"]
    for path in run.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in SECRETS.values():
                assert value.encode() not in data, f"{value} in {path}"
    assert (run / "rehearsal_server.log").stat().st_size > 0
