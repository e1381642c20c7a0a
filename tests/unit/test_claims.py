"""The report's claim verdicts: mean and SD over seeds, and what counts as an effect."""

from __future__ import annotations

import statistics

import polars as pl

from synth_ray.config import load_config
from synth_ray.design import adapter_grid
from synth_ray.report.claims import per_adapter, seed_stats
from tests.conftest import CONFIGS


def fake_summary(cfg, value) -> dict:
    names = ["vanilla", *[n for _, _, n in adapter_grid(cfg)], "human-reference"]
    return {"diversity": [{"condition": n, "lexical_diversity_aggregated": value(n, "d")}
                          for n in names],
            "perplexity": {"outputs": {"summary": {n: {"mean": value(n, "p")} for n in names}}}}


def test_seed_stats_are_mean_and_sd_over_seeds() -> None:
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.training.seeds == [1, 2, 3]

    def value(name: str, kind: str) -> float:
        return float(len(name) * (3 if kind == "d" else 1) + sum(map(ord, name)) % 7)

    responses = pl.DataFrame({"source": ["human-seed1", "human-seed1", "vanilla"],
                              "response": ["a b c", "a b", "x"],
                              "status": ["ok", "truncated", "ok"]})
    rows = per_adapter(cfg, fake_summary(cfg, value), responses)
    stats = seed_stats(rows)
    for cond in ("human", "single-corpora", "multi-mixture"):
        names = [f"{cond}-seed{s}" for s in (1, 2, 3)]
        want = [value(n, "d") for n in names]
        mean, sd, n = stats[cond]["diversity"]
        assert n == 3 and abs(mean - statistics.mean(want)) < 1e-9
        assert abs(sd - statistics.stdev(want)) < 1e-9
    assert stats["vanilla"]["perplexity"] == (value("vanilla", "p"), None, 1)
    assert stats["human"]["words"][0] == 2.5  # one adapter's outputs: 3 and 2 words
