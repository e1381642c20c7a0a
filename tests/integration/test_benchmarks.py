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
            "perplexity_speed": ["--quick"], "scale": ["--quick"]}
PLAIN_LANE = {"cpu_lora": ["--quick"], "engine_start": ["--quick"],
              "pretrain_speed": ["--quick"],
              "self_bleu_speed": ["--quick"], "train_gpu": ["--quick"],
              "tracking_overhead": ["--quick"], "verdict_tests": ["--quick"]}


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


# Each script's headline figures, parsed from its output: a ratio must be there and lie in
# a range that any working quick run meets on any machine (a factor of 10-100 of slack for
# noise and tiny sizes, not a speed claim: those are in docs/benchmarks.md), and where a
# benchmark also checks that two paths agree, the agreement is held to its tolerance.
# script -> [(pattern, low, high)]: every group of the pattern's match is a ratio, except a
# group named `diff` (an agreement, held under `high`) or `same` (must read "same").
FIGURES: dict[str, list[tuple[str, float, float]]] = {
    # (cpu_lora times 0.05 s windows: beside the other test worker it read 11-13x once)
    "cpu_lora": [(r"plugin / vllm kernels: score (\d+\.\d+)x, answer (\d+\.\d+)x", 0.01, 50),
                 (r"largest prompt log-prob difference (?P<diff>\S+) ", 0, 1e-3)],
    "engine_start": [(r"^(?:compiled|eager)[\w, ]*?\s+[\d.]+\s+(\d+\.\d+)x", 0.05, 20)],
    "generation_throughput": [(r"ratio pipeline/raw: end-to-end (\d+\.\d+)x", 0.01, 10)],
    "perplexity_speed": [(r"raw vLLM prompt_logprobs .* (\d+\.\d+)x  max rel\. diff (?P<diff>\S+)",
                          0.01, 1e-4),
                         # end to end at 16 samples is the pipeline's start-up: "0.00x"
                         (r"synth-ray pipeline, e2e .* (\d+\.\d+)x  max rel\. diff (?P<diff>\S+)",
                          0.0, 1e-4)],
    "pretrain_speed": [(r"bf16 autocast / fp32 step time: (\d+\.\d+)x", 0.05, 50)],
    # the bookkeeping's cost per generation at 4x the generations (fixed costs: below 1)
    "scale": [(r"^bookkeeping per generation \d+/\d+: (\d+\.\d+)x$", 0.01, 10),
              (r"^rows +24: run .* resume [\d.]+ s; input hashes [\d.]+ s$", 0, 0)],
    "self_bleu_speed": [(r"^\| [\d,]+ \| [\d.]+ \| [\d.]+ \| ([\d,]+)x \| (?P<diff>\S+) \|$",
                         2, 1e-9)],
    "text_stages": [(r"synth-ray / ray stages: (\d+\.\d+)x", 0.05, 20)],
    "tracking_overhead": [(r"= (\d+\.\d+)x a training step", 0.0, 5)],
    "verdict_tests": [(r"^\| one seed: Mann-Whitney U \+ bootstrap interval \| [\d.]+ \| "
                       r"([\d,]+)x \|$", 1, 1e5),
                      (r"ratio one seed / seeds per check: (\d+\.\d+)x", 0.01, 10)],
    "train_gpu": [(r"ratio synth-ray run_loop / plain loop: (\d+\.\d+)x", 0.1, 10),
                  (r"^padding-free / padded tokens/s: (\d+\.\d+)x$", 0.1, 20)],
    "train_grid": [(r"\s[\d.]+ s\s+(\d+\.\d+)x\s+best val losses: (?P<same>\S+)", 0.05, 20)],
    "train_throughput": [(r"^padding-free / padded tokens/s: (\d+\.\d+)x$", 0.1, 20),
                         (r"^ratio Ray Train / plain: (\d+\.\d+)x$", 0.02, 10)],
}


def figures_problems(name: str, stdout: str) -> list[str]:
    """What is wrong with a script's printed figures (empty: all there and in range)."""
    problems = []
    for pattern, low, high in FIGURES[name]:
        matches = list(re.finditer(pattern, stdout, re.M))
        if not matches:
            problems.append(f"no line matches {pattern!r}")
        for m in matches:
            named = {v: k for k, v in m.re.groupindex.items()}
            for i, text in enumerate(m.groups(), start=1):
                kind = named.get(i)
                if kind == "same":
                    if text != "same":
                        problems.append(f"{m.group(0)!r}: the variants' results differ")
                elif kind == "diff":
                    if not float(text) <= high:
                        problems.append(f"{m.group(0)!r}: difference {text} over {high}")
                else:
                    value = float(text.replace(",", ""))
                    top = high if "diff" not in m.re.groupindex else float("inf")
                    if not low <= value <= top:
                        problems.append(f"{m.group(0)!r}: ratio {value} outside [{low}, {top}]")
    return problems


def test_every_figure_pattern_is_checked() -> None:
    assert set(FIGURES) == set(RAY_LANE) | set(PLAIN_LANE)
    # the checks can fail: a missing line, a ratio out of range, a disagreement
    assert figures_problems("text_stages", "nothing printed")
    assert figures_problems("text_stages", "synth-ray / ray stages: 45.00x; same prompt")
    assert figures_problems("self_bleu_speed", "| 100 | 1.00 | 0.0100 | 100x | 3.0e-03 |")
    assert not figures_problems("self_bleu_speed", "| 100 | 1.00 | 0.0100 | 100x | 0.0e+00 |")
    assert figures_problems("train_grid", "a  9.0 s  1.00x  best val losses: DIFFERENT [1]")


@pytest.mark.parametrize("name", sorted({**RAY_LANE, **PLAIN_LANE}))
def test_benchmark_runs_in_quick_mode(name: str, quick_runs) -> None:
    proc, seconds = quick_runs[name]
    print(f"{name}: {seconds:.0f} s")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    assert figures_problems(name, proc.stdout) == [], proc.stdout[-3000:]
