"""Helpers for integration tests: configs on disk and the CLI in a subprocess (Ray and vLLM
spawn processes, so each run gets a fresh interpreter, as a user's would)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import yaml

from synth_ray.data.conditions import COLUMNS
from synth_ray.data.dolly import load_dataset

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "jobs" / "configs" / "plumbing.yaml"  # random weights: quick
TARGET = {"name": "tiny-target", "model": "tiny://target", "num_workers": 2,
          "effective_batch_size": 8, "per_device_batch_size": 4, "self_source": "small-a"}
# A quick judge: a short reason, a few safety prompts and articles, half judged twice.
JUDGE = {"model": "tiny://judge", "max_reason_chars": 24, "max_safety_prompts": 6,
         "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 40},
         "jailbreaks_per_prompt": 1, "repeat_fraction": 0.5, "max_articles": 3,
         "summary_max_tokens": 12}
TRAINING = {"epochs": 3, "learning_rate": 2.0e-3, "eval_every_steps": 5, "max_length": 256,
            "dtype": "float32", "warmup_ratio": 0.0, "early_stopping_patience": 100}


# Fault points (where a driver is killed, which HTTP requests fail) are drawn at random from
# one seed per test session. The seed is printed with every draw (pytest shows it when a
# test fails), so a failing draw replays with SYNTH_RAY_FAULT_SEED=<seed>.
FAULT_SEED = int(os.environ.get("SYNTH_RAY_FAULT_SEED")
                 or random.SystemRandom().randrange(1_000_000))


def fault_rng(name: str) -> random.Random:
    """The generator of one test's fault draws: the session seed and the test's name."""
    print(f"{name}: fault seed {FAULT_SEED} (replay: SYNTH_RAY_FAULT_SEED={FAULT_SEED})")
    return random.Random(f"{FAULT_SEED}:{name}")


def fault_point(name: str, lo: int, hi: int) -> int:
    """A kill point drawn uniformly from [lo, hi], printed with the seed that replays it."""
    k = fault_rng(name).randint(lo, max(lo, hi))
    print(f"{name}: kill point {k} of [{lo}, {max(lo, hi)}]")
    return k


def small_config(tmp_path: Path, name: str = "cfg", **sections) -> Path:
    """The demo config, shrunk for tests; `sections` replace top-level sections."""
    data = yaml.safe_load(DEMO.read_text())
    data["dataset"]["max_rows"] = 48
    data["generation"].update(shard_rows=4, batch_size=4, stall_timeout_s=300,
                              sampling={"temperature": 0.7, "top_p": 0.9, "max_tokens": 12})
    data["sources"] = [s for s in data["sources"] if s["name"] in ("small-a", "small-b")]
    data["conditions"].update(single_source={"small": "small-a"},
                              multi_source={"small": ["small-a", "small-b", "small-a",
                                                      "small-b"]})
    data.update(sections)
    names = {s["name"] for s in data["sources"]}
    for t in data.get("targets", []):  # a target's own family must be among the sources
        if t.get("self_source") not in names:
            t.pop("self_source", None)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "300", "VLLM_CPU_KVCACHE_SPACE": "1",
            "RAY_DISABLE_USAGE_STATS": "1", **extra}


def session_pids(sid: int) -> list[int]:
    """The processes of session `sid` (Linux /proc). Ray starts its workers in process groups
    of their own, so `killpg` of a driver misses them (a Ray Train worker outlived one and
    saved its adapter after the kill, seen in CI); they stay in the driver's session."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # the fields after the command (which may hold spaces): state ppid pgrp session
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # a zombie is dead, not yet reaped
            pids.append(int(stat.parent.name))
    return pids


def kill_session(sid: int, timeout: float = 30) -> None:
    """SIGKILL every process of session `sid` (a driver started with `start_new_session` and
    the local Ray instance it started) and wait until none is left: a kill -9 of the whole
    machine's run, with nothing left to write after it."""
    deadline = time.time() + timeout
    while pids := session_pids(sid):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert time.time() < deadline, f"processes of session {sid} survive SIGKILL: {pids}"
        time.sleep(0.1)


def run_cli(*args: str, timeout: int = 600, env: dict | None = None):
    """The CLI in its own session; whatever of its Ray instance outlives it (a driver that
    killed itself leaves its workers behind) is killed before this returns."""
    proc = subprocess.Popen([sys.executable, "-m", "synth_ray.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or cli_env(), cwd=REPO, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_datasets(run_dir: Path, conditions: list[str], n: int = 64) -> None:
    """Training sets (human answers for every condition: plumbing, not a study) and a
    held-out test set of 12 other rows."""
    all_rows = load_dataset("tiny://dolly-sample").rows
    (run_dir / "splits").mkdir(parents=True, exist_ok=True)
    all_rows.slice(n, 12).with_columns(part=pl.lit(0, pl.Int32)).write_parquet(
        run_dir / "splits" / "test.parquet")
    rows = all_rows.head(n)
    df = rows.with_columns(
        part=pl.lit(1, pl.Int32), source=pl.lit("human"), condition=pl.lit("x"),
        bracket=pl.lit(None, pl.Utf8),
        split=pl.when(pl.int_range(pl.len()) % 8 == 0).then(pl.lit("validation"))
        .otherwise(pl.lit("train")),
    ).select(COLUMNS)  # fmt: skip
    (run_dir / "datasets").mkdir(parents=True, exist_ok=True)
    for c in conditions:
        df.with_columns(condition=pl.lit(c)).write_parquet(run_dir / "datasets" / f"{c}.parquet")


def grid_model(run_dir: Path, adapter: str | None):
    """(model, tokenizer) in transformers of the grid's target, `adapter` merged into it
    through PEFT (None: the base model alone), fp32 and in eval mode: the independent side
    of every vLLM-against-transformers check on the grid."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth_ray import models

    base = models.resolve_model("tiny://target")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter:
        path = run_dir / "adapters" / "tiny-target" / adapter
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    return model.eval(), AutoTokenizer.from_pretrained(base)
