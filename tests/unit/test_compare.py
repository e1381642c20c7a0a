"""`synth-ray compare`: runs labelled by what their configs differ in, each metric's mean and
SD over seeds per condition, from the runs' own files."""

from __future__ import annotations

import json
import statistics

import pytest

from synth_ray.compare import CompareError, compare, varied_keys
from synth_ray.config import dump_config, load_config
from synth_ray.design import adapter_grid
from tests.conftest import CONFIGS


def make_run(root, temperature: float, value) -> None:
    cfg = load_config(CONFIGS / "demo.yaml", [f"evaluation.sampling.temperature={temperature}",
                                              f"run.dir={root}"])
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(dump_config(cfg))
    names = ["vanilla", *[n for _, _, n in adapter_grid(cfg)]]
    summ = {n: {"mean": value(n)} for n in names}
    doc = {"perplexity": {"outputs": {"summary": summ}, "human": {"summary": {}}},
           "diversity": [{"condition": n, "lexical_diversity_individual": 2 * value(n),
                          "lexical_diversity_aggregated": 3 * value(n),
                          "semantic_diversity": 0.5} for n in names]}
    (root / "eval" / "tiny-target").mkdir(parents=True)
    (root / "eval" / "tiny-target" / "summary.json").write_text(json.dumps(doc))


def test_compare_tabulates_each_metric_across_runs(tmp_path) -> None:
    def value(t: float):
        return lambda n: t * 10 + len(n) + (sum(map(ord, n)) % 5)

    make_run(tmp_path / "a", 0.3, value(0.3))
    make_run(tmp_path / "b", 1.0, value(1.0))
    md = compare([tmp_path / "a", tmp_path / "b"], ["perplexity", "lexical_aggregated",
                                                    "harm_RB+J"], tmp_path / "out")
    assert "Runs differ in: evaluation.sampling.temperature." in md
    table = md[md.index("**tiny-target: perplexity**"):]
    row = next(line for line in table.splitlines() if line.startswith("| single-corpora |"))
    for t in (0.3, 1.0):
        vals = [value(t)(f"single-corpora-seed{s}") for s in (1, 2, 3)]
        assert f"{statistics.mean(vals):.4g} ± {statistics.stdev(vals):.2g}" in row
    assert "| temperature=0.3 | temperature=1.0 |" in table.splitlines()[2]
    assert "**tiny-target: harm_RB+J**: not measured" in md
    png = (tmp_path / "out" / "compare.png").read_bytes()
    assert png.startswith(b"\x89PNG") and (tmp_path / "out" / "compare.csv").exists()
    assert (tmp_path / "out" / "compare.md").read_text() == md


def test_compare_refuses_what_it_cannot_read(tmp_path) -> None:
    make_run(tmp_path / "a", 0.3, lambda n: 1.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CompareError, match="no config.yaml"):
        compare([tmp_path / "a", tmp_path / "empty"])
    with pytest.raises(CompareError, match="no run has any of the metrics"):
        compare([tmp_path / "a"], ["spb"])


def test_varied_keys_ignore_the_run_and_tracking() -> None:
    a = {"run": {"dir": "x"}, "tracking": {"uri": "u"}, "training": {"seeds": [1]}, "k": 1}
    b = {"run": {"dir": "y"}, "tracking": {"uri": "v"}, "training": {"seeds": [2]}}
    assert varied_keys([a, b]) == ["k", "training.seeds"]
