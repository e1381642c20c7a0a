"""Before anything starts (runtime/readiness.py): a run that joins a cluster refuses a local
run.dir, a local model path and `accelerator: auto`; every input file the config names is
read by its stage's loader; `validate` and `run` exit 2 naming the key, `plan` lists them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synth_ray.config import load_config
from synth_ray.runtime.readiness import cluster_problems, input_problems
from synth_ray.toy.paper_inputs import write_samples

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "jobs" / "configs"
PAPER = CONFIGS / "paper-8b.yaml"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synth_ray.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "300"})


def keys(found) -> list[str]:
    return [p.key for p in found]


def test_validate_walks_the_paper_config_to_ready(tmp_path) -> None:
    """The shipped paper config on a cluster: its local run.dir first; with a bucket, each
    missing input file; with the inputs in their layouts, nothing."""
    shipped = cli("validate", str(PAPER), "resources.ray_address=auto")
    assert shipped.returncode == 2
    assert "error: run.dir: 'runs/paper-8b' is a folder on this machine" in shipped.stderr
    # a run in a bucket logs to an MLflow server (the config says so; validate reaches none)
    on_bucket = ["run.dir=s3://paper-bucket/paper-8b", "tracking.uri=http://mlflow.internal:5000"]
    bucket = cli("validate", str(PAPER), *on_bucket)
    assert bucket.returncode == 2
    errors = [line for line in bucket.stderr.splitlines() if line.startswith("error: ")]
    assert [e.split(":")[1].strip() for e in errors] == [
        "judge.safety_prompts", "judge.jailbreak_templates", "judge.articles"], errors
    assert all("does not exist" in e for e in errors)
    samples = write_samples(tmp_path / "data")
    ready = cli("validate", str(PAPER), *on_bucket, *[f"{k}={v}" for k, v in samples.items()])
    assert ready.returncode == 0, ready.stderr[-2000:]
    assert "error:" not in ready.stderr


def test_a_run_refuses_before_the_run_dir_is_touched(tmp_path) -> None:
    run_dir = tmp_path / "run"
    out = cli("run", str(CONFIGS / "plumbing.yaml"), f"run.dir={run_dir}",
              "judge.articles=/nowhere/articles.jsonl")
    assert out.returncode == 2
    assert "judge.articles: /nowhere/articles.jsonl: FileNotFoundError" in out.stderr
    assert not run_dir.exists()


def test_plan_lists_what_a_run_needs_without_failing() -> None:
    out = cli("plan", str(PAPER), "--json")
    before = json.loads(out.stdout)["before_a_run"]
    assert [b.split(":")[0] for b in before] == [
        "run.dir", "judge.safety_prompts", "judge.jailbreak_templates", "judge.articles"]
    assert out.returncode == 0, out.stdout[-2000:]  # the paper's plan itself fits


def test_joining_a_cluster_asks_for_shared_paths_and_an_explicit_accelerator(
        tmp_path, monkeypatch) -> None:
    model = tmp_path / "llama"
    model.mkdir()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = load_config(CONFIGS / "plumbing.yaml", [f"targets.0.model={model}"])
    assert cluster_problems(local) == []  # its own local Ray instance: one disk
    cfg = load_config(CONFIGS / "plumbing.yaml", [f"targets.0.model={model}",
                                                  "resources.ray_address=auto"])
    assert keys(cluster_problems(cfg)) == ["run.dir", "targets.0.model",
                                           "resources.accelerator"]
    # the embedding model: loaded by the score tasks on the workers
    embed = load_config(CONFIGS / "plumbing.yaml", [f"evaluation.embedding_model={model}",
                                                    "resources.ray_address=auto",
                                                    "resources.accelerator=cpu",
                                                    "run.dir=s3://b/run"])
    assert keys(cluster_problems(embed)) == ["evaluation.embedding_model"]
    # a driver inside `ray job submit` joins the job's cluster too
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    assert keys(cluster_problems(local)) == ["run.dir", "targets.0.model",
                                             "resources.accelerator"]
    shared = load_config(CONFIGS / "plumbing.yaml", [f"targets.0.model={model}",
                                                     "run.shared_mount=true",
                                                     "resources.accelerator=cpu"])
    assert cluster_problems(shared) == []
    bucket = load_config(CONFIGS / "plumbing.yaml", ["run.dir=s3://b/run",
                                                     "resources.accelerator=cuda"])
    assert cluster_problems(bucket) == []


@pytest.mark.parametrize(("key", "text", "why"), [
    ("judge.safety_prompts", "[1, 2, 3]", "no valid safety prompt rows"),
    ("judge.jailbreak_templates", "Name,Prompt,Votes\nx,no placeholder,99\n", None),
    ("judge.articles", '{"id": "a", "article": "text only"}\n', "missing or empty highlights"),
])
def test_an_input_in_the_wrong_layout_is_named(tmp_path, key, text, why) -> None:
    samples = write_samples(tmp_path / "data")
    samples[key].write_text(text)
    cfg = load_config(PAPER, [f"{k}={v}" for k, v in samples.items()])
    found = input_problems(cfg)
    assert keys(found) == [key], found
    if why:
        assert why in found[0].message
    # the samples as written read clean
    assert input_problems(load_config(PAPER, [
        f"{k}={v}" for k, v in write_samples(tmp_path / "fresh").items()])) == []
