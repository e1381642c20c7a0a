"""Every benchmark still runs: each script in its quick mode (tiny sizes, seconds to a
minute), so a benchmark that the code has moved away from fails here, not when someone
next needs its figure. The figures themselves are measured in full runs
(docs/benchmarks.md), never asserted: these machines are shared and noisy."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.integration.helpers import REPO, cli_env

pytestmark = pytest.mark.slow

# script -> extra arguments; each prints at least one ratio ("1.23x") unless noted
QUICK = {
    "cpu_lora": ["--quick"],
    "engine_start": ["--quick"],
    "generation_throughput": ["--quick"],
    "perplexity_speed": ["--quick"],
    "pretrain_speed": ["--quick"],
    "self_bleu_speed": ["--quick"],
    "text_stages": ["--quick"],
    "train_grid": ["--quick"],
    "train_gpu": ["--quick"],
    "train_throughput": ["--quick"],
}
ON_PAPER = {  # estimates from a config: no ratio, a table
    "generation_gpu_hours": [str(REPO / "jobs" / "configs" / "paper-8b.yaml")],
    "paper_gpu_hours": [str(REPO / "jobs" / "configs" / "paper-8b.yaml")],
}


def test_every_benchmark_script_is_covered() -> None:
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")}
    assert scripts == set(QUICK) | set(ON_PAPER)


@pytest.mark.parametrize("name", sorted(QUICK) + sorted(ON_PAPER))
def test_benchmark_runs_in_quick_mode(name: str, tmp_path) -> None:
    args = QUICK.get(name) or ON_PAPER[name]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env=cli_env())
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    if name in QUICK:
        assert re.search(r"\d[\d,]*(\.\d+)?x\b", proc.stdout), proc.stdout[-3000:]
    if name == "train_throughput":  # issue 22's line names what it compares
        assert re.search(r"^padding-free / padded tokens/s: \d+\.\d+x$", proc.stdout, re.M)
