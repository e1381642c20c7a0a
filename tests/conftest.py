"""Shared fixtures. Tiny models are cached under a session-wide folder so tests build them once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "jobs" / "configs"

# Tiny models and the tokenizer are deterministic; share the user's cache between test runs
# unless a test overrides it, so CI pays the build cost once.
os.environ.setdefault("SYNTH_RAY_CACHE", str(Path.home() / ".cache" / "synth-ray"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


@pytest.fixture
def demo_config_path() -> Path:
    return CONFIGS / "plumbing.yaml"  # random weights: no pre-training


# One trained grid serves training, evaluation, judge and fault tests (training it is the
# slowest step of the suite).
@pytest.fixture(scope="session")
def grid_run(tmp_path_factory):
    """Three conditions as a Tune grid of 2-worker DDP runs; greedy evaluation sampling."""
    from tests.integration.helpers import (
        JUDGE,
        TARGET,
        TRAINING,
        run_cli,
        small_config,
        write_datasets,
    )

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


@pytest.fixture(scope="session")
def judged(grid_run):
    """The grid's responses judged, with summaries written by the sources (real path)."""
    import subprocess
    import sys

    from tests.integration.helpers import REPO, cli_env, run_cli

    cfg, run_dir = grid_run
    proc = run_cli("respond", str(cfg), f"run.dir={run_dir}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    helper = REPO / "tests" / "integration" / "write_summaries.py"
    proc = subprocess.run([sys.executable, str(helper), str(cfg), str(run_dir)],
                          capture_output=True, text=True, timeout=900, env=cli_env())
    assert proc.returncode == 0, proc.stderr[-6000:]
    proc = run_cli("judge", str(cfg), f"run.dir={run_dir}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return cfg, run_dir
