"""Fixtures shared by integration modules: one trained grid serves training and evaluation
tests (training it is the slowest step of the suite)."""

from __future__ import annotations

import pytest

from .helpers import JUDGE, TARGET, TRAINING, run_cli, small_config, write_datasets


@pytest.fixture(scope="session")
def grid_run(tmp_path_factory):
    """Three conditions as a Tune grid of 2-worker DDP runs; greedy evaluation sampling."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = small_config(tmp, targets=[TARGET], training=TRAINING,
                       conditions={"human": True, "single_source": {"small": "small-a"},
                                   "multi_source": {"small": ["small-a", "small-b"] * 2}},
                       evaluation={"sampling": {"temperature": 0.0, "max_tokens": 8,
                                                "top_p": 1.0},
                                   "self_bleu": {"individual_samples": 12,
                                                 "aggregated_samples": 12}},
                       judge=JUDGE)
    run_dir = tmp / "run"
    write_datasets(run_dir, ["human", "single-small", "multi-small"])
    proc = run_cli("train", str(cfg), f"run.dir={run_dir}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return cfg, run_dir
