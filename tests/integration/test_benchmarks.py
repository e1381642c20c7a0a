"""Every benchmark still runs: each script in its quick mode (tiny sizes), so a benchmark
that the code has moved away from fails here, not when someone next needs its figure. The
figures themselves are measured in full runs (docs/benchmarks.md), never asserted: these
machines are shared and noisy.

The scripts run in two lanes at once, those that start a Ray instance in one and the rest
in the other: their time is mostly single-threaded imports and engine starts, so two at a
time nearly halve the suite's wait, and no two Ray instances start side by side."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.helpers import REPO, cli_env

pytestmark = pytest.mark.slow

# script -> arguments; each lane runs its scripts one after the other
RAY_LANE = {"generation_throughput": ["--quick"], "text_stages": ["--quick"],
            "train_grid": ["--quick"], "train_throughput": ["--quick"],
            "perplexity_speed": ["--quick"]}
PLAIN_LANE = {"cpu_lora": ["--quick"], "engine_start": ["--quick"],
              "pretrain_speed": ["--quick"],
              "self_bleu_speed": ["--quick"], "train_gpu": ["--quick"],
              "tracking_overhead": ["--quick"]}


def run_lane(lane: dict[str, list[str]], cwd) -> dict[str, tuple]:
    out = {}
    for name, args in lane.items():
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args],
                              capture_output=True, text=True, timeout=900, cwd=cwd,
                              env=cli_env())
        out[name] = (proc, time.perf_counter() - t0)
    return out


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory) -> dict[str, tuple]:
    cwd = tmp_path_factory.mktemp("bench")
    with ThreadPoolExecutor(max_workers=2) as pool:
        lanes = [pool.submit(run_lane, lane, cwd) for lane in (RAY_LANE, PLAIN_LANE)]
        return {k: v for f in lanes for k, v in f.result().items()}


def test_every_benchmark_script_is_covered() -> None:
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")}
    assert scripts == set(RAY_LANE) | set(PLAIN_LANE)


@pytest.mark.parametrize("name", sorted({**RAY_LANE, **PLAIN_LANE}))
def test_benchmark_runs_in_quick_mode(name: str, quick_runs) -> None:
    proc, seconds = quick_runs[name]
    print(f"{name}: {seconds:.0f} s")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    # at least one ratio, e.g. "1.23x" or "45x"
    assert re.search(r"\d[\d,]*(\.\d+)?x\b", proc.stdout), proc.stdout[-3000:]
    if name == "train_throughput":  # issue 22's line names what it compares
        assert re.search(r"^padding-free / padded tokens/s: \d+\.\d+x$", proc.stdout, re.M)
