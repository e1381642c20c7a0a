"""A scheme model on a node that does not have it (runtime/node_models.py): what a seed builds
is built there, at the driver's path, with the same weights as the driver's; a node whose
cache lies elsewhere, or a model only a training run builds, fails naming it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from synth_ray.models import resolve_model
from synth_ray.runtime.node_models import VAR, ensure_here, models_env


def digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def test_a_seeded_model_is_built_on_a_node_without_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SYNTH_RAY_CACHE", str(tmp_path / "cache"))
    hub = "meta-llama/Llama-3.1-8B-Instruct"
    env = models_env({"tiny://small-a": resolve_model("tiny://small-a"), hub: hub})
    spec = json.loads(env[VAR])  # the driver's folder; the hub id is not the scheme's
    assert list(spec) == ["tiny://small-a"]
    driver = Path(spec["tiny://small-a"])
    weights = digest(driver)
    shutil.rmtree(tmp_path / "cache")  # a worker node: the same path, nothing in it
    monkeypatch.setenv(VAR, env[VAR])
    ensure_here("test")
    assert digest(driver) == weights  # the same weights as the driver's
    # a node whose cache lies elsewhere would load another folder than the driver named
    monkeypatch.setenv("SYNTH_RAY_CACHE", str(tmp_path / "elsewhere"))
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(RuntimeError, match=r"tiny://small-a is .*elsewhere.* on node .* "
                                           r"\(test\) but .* on the driver"):
        ensure_here("test")


def test_a_trained_model_is_never_trained_on_a_worker(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SYNTH_RAY_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match=r"tiny://pt-reference is not built on node .* "
                                           r"\(Ray Train worker\), and only a training run"):
        ensure_here("Ray Train worker", {"tiny://pt-reference": str(tmp_path / "x")})
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("model-*"))


def test_a_training_worker_builds_outside_its_process_group(tmp_path, monkeypatch) -> None:
    """Under torch.distributed (a Ray Train worker) the build runs in a child process:
    transformers writes weights on rank 0 only, and a rank-1 worker was left a folder
    without them."""
    import torch.distributed as dist

    monkeypatch.setenv("SYNTH_RAY_CACHE", str(tmp_path / "cache"))
    spec = json.loads(models_env({"tiny://judge": resolve_model("tiny://judge")})[VAR])
    shutil.rmtree(tmp_path / "cache")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        ensure_here("Ray Train worker", spec)
    finally:
        dist.destroy_process_group()
    built = Path(spec["tiny://judge"])
    assert (built / "config.json").is_file() and (built / "model.safetensors").is_file()
