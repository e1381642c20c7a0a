"""Joining or starting the Ray cluster a stage runs on."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth_ray.config import (
    EngineSection,
    ExperimentConfig,
    ResourcesSection,
    TargetSection,
)

log = logging.getLogger("synth_ray")
# the names an engine process or training worker checks at its start (names, not values;
# runtime/node_env.py)
CHECK_VAR = "SYNTH_RAY_NODE_ENV"


def engine_env(res: ResourcesSection) -> dict[str, str]:
    """Environment that engine actors need; names only, never secrets (the variables every
    node must have, checked by each engine at its start: runtime/node_env.py)."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(res.vllm_cpu_kvcache_gib)}
    if res.node_env:
        env[CHECK_VAR] = ",".join(res.node_env)
    return env


def ensure_ray(res: ResourcesSection) -> None:
    """Connect to `resources.ray_address`, or start a local instance whose dashboard listens
    on `resources.dashboard_host` (127.0.0.1 by default, never a public interface)."""
    import ray

    from synth_ray.observe.terminal import quiet_libraries

    if ray.is_initialized():
        return
    os.environ.update(engine_env(res))  # local workers inherit the driver's environment
    kwargs: dict = {"log_to_driver": True, "configure_logging": False}
    root = None  # a local instance's own temp root
    if res.ray_address:
        kwargs["address"] = res.ray_address
    elif os.environ.get("RAY_ADDRESS"):
        # inside `ray job submit`: join the job's cluster, which has its own resources.
        # ray.data.llm calls ray.init(runtime_env=its engines' env) again, and Ray refuses a
        # key that the job's runtime env sets too (jobs/runtime_env.yaml's
        # VLLM_CPU_KVCACHE_SPACE: "Failed to merge the Job's runtime env"); Ray's own switch
        # lets the engines' env (engine_env: the config's values) win for them
        os.environ["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    else:
        # "local": a new instance of the run's own, never the one a `ray start` on this
        # machine recorded in /tmp/ray (which a bare ray.init() would join: a user's own
        # Ray, or another run's)
        kwargs.update(address="local", num_cpus=res.num_cpus, num_gpus=res.num_gpus,
                      dashboard_host=res.dashboard_host)
        root = _private_temp_root()
    info = ray.init(**kwargs)
    if root is not None:
        # Ray's state API looks a cluster up by the address recorded in the temp dir, and
        # code inside this instance's workers uses it (Ray Train's placement-group cleaner:
        # with a user's `ray start` on the machine it asked that cluster whether this run's
        # controller lived, was told no, and removed the training workers' placement group)
        (root / "ray" / "ray_current_cluster").write_text(info.address_info["gcs_address"])
    quiet_libraries()
    log.info("ray: %s (dashboard %s)%s", res.ray_address or "local instance",
             getattr(info, "dashboard_url", None) or "off",
             f"; its session logs under {root / 'ray'}" if root is not None else "")


def _private_temp_root() -> Path:
    """A temp root of the run's own local instance (RAY_TMPDIR, set before Ray starts so its
    raylet and every worker inherit it): its session files, and the record of which cluster
    Ray's own tools in its workers join, apart from /tmp/ray, where a user's `ray start`
    records theirs. Short, under /tmp: Ray's Unix socket paths must stay under ~107 chars."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="synth-ray-", dir="/tmp" if Path("/tmp").is_dir()
                                 else None))
    (root / "ray").mkdir()
    os.environ["RAY_TMPDIR"] = str(root)
    return root


def engine_device(cfg: ExperimentConfig) -> str:
    """"cuda" or "cpu" for every vLLM engine of the run, from the config alone
    (`resources.accelerator`): never from the GPUs the cluster shows right now, which on an
    autoscaling cluster is 0 until the first GPU request makes the autoscaler add a node."""
    res = cfg.resources
    if res.accelerator != "auto":
        return res.accelerator
    return "cuda" if any(t.use_gpu for t in cfg.targets) or res.num_gpus else "cpu"


@dataclass(frozen=True)
class GpuType:
    """The GPU type a request asks for (`name`: Ray's accelerator_type; None: any GPU) and
    what the config says of it."""

    name: str | None
    memory_gib: float
    gpus_per_node: int
    usd_per_gpu_hour: float | None = None
    node_gbps: float | None = None


def gpu_type(res: ResourcesSection, named: str | None) -> GpuType:
    """A request's GPU type: its own (`named`), else resources.accelerator_type, else any GPU
    of resources.gpu_memory_gib and gpus_per_node (config_checks: every name is known)."""
    name = named or res.accelerator_type
    if name is None:
        return GpuType(None, res.gpu_memory_gib, res.gpus_per_node)
    t = res.gpu_types[name]
    return GpuType(name, t.memory_gib, t.gpus_per_node, t.usd_per_gpu_hour, t.node_gbps)


def engine_bundles(tensor_parallel: int, pipeline_parallel: int, gpu: bool,
                   gpus_per_node: int) -> dict[str, Any]:
    """The placement group of one engine replica: a GPU and a CPU per worker, all on one
    node (STRICT_PACK) when there is no pipeline parallel (tensor parallel never straddles
    two nodes; one wider than a node is refused by `resource_problems`) or when all the
    workers fit one node, else PACK (pipeline stages on several nodes); one CPU for a
    vLLM-cpu engine. The GPU type is not here: ray.data.llm adds it to every bundle."""
    if not gpu:
        return {"bundles": [{"CPU": 1}], "strategy": "PACK"}
    n = tensor_parallel * pipeline_parallel
    one_node = pipeline_parallel == 1 or n <= gpus_per_node
    return {"bundles": [{"GPU": 1, "CPU": 1}] * n,
            "strategy": "STRICT_PACK" if one_node else "PACK"}


def engine_placement(res: ResourcesSection, tensor_parallel: int, pipeline_parallel: int,
                     accelerator_type: str | None, gpu: bool) -> dict[str, Any]:
    """One replica's bundles and strategy, and its GPU type (None on CPU or any GPU)."""
    t = gpu_type(res, accelerator_type)
    placement = engine_bundles(tensor_parallel, pipeline_parallel, gpu, t.gpus_per_node)
    return {**placement, "accelerator_type": t.name if gpu else None}


def train_scaling(cfg: ExperimentConfig, target: TargetSection) -> dict[str, Any]:
    """Ray Train's ScalingConfig arguments for `target` (train/driver.py builds it from
    these; plan and test_autoscaling read them): GPU workers of the target's GPU type
    (accelerator_type: none lands on a smaller GPU of a mixed fleet), all on one node
    (STRICT_PACK) when they fit one, else packed onto as few as Ray can (PACK)."""
    out: dict[str, Any] = {
        "num_workers": target.num_workers, "use_gpu": target.use_gpu,
        "resources_per_worker": {"CPU": target.cpus_per_worker,
                                 **({"GPU": 1} if target.use_gpu else {})},
        "placement_strategy": "PACK"}
    if target.use_gpu:
        t = gpu_type(cfg.resources, target.accelerator_type)
        if t.name:
            out["accelerator_type"] = t.name
        if target.num_workers <= t.gpus_per_node:
            out["placement_strategy"] = "STRICT_PACK"
    return out


class ResourceError(RuntimeError):
    """The config asks for more than the cluster can ever give."""


@dataclass(frozen=True)
class GpuNeed:
    """GPUs one unit of a stage's work needs at once; `one_node`: all on one node."""

    key: str
    gpus: int
    one_node: bool
    accelerator_type: str | None = None  # its own; None: resources.accelerator_type
    type_key: str = "resources.accelerator_type"  # the key that names its GPU type


def _engine_need(key: str, e: EngineSection) -> GpuNeed:
    return GpuNeed(key, e.tensor_parallel_size * e.pipeline_parallel_size,
                   e.pipeline_parallel_size == 1, e.accelerator_type,
                   f"{key}.accelerator_type" if e.accelerator_type else
                   "resources.accelerator_type")


def gpu_needs(cfg: ExperimentConfig, stage: str) -> list[GpuNeed]:
    """What `stage` places that needs GPUs: a training run (its workers may span nodes), an
    engine replica (tensor x pipeline parallel). Engines need none on `accelerator: cpu`."""
    if stage == "train":
        return [GpuNeed(f"targets.{i}.num_workers", t.num_workers, False, t.accelerator_type,
                        f"targets.{i}.accelerator_type" if t.accelerator_type else
                        "resources.accelerator_type")
                for i, t in enumerate(cfg.targets) if t.use_gpu]
    if engine_device(cfg) != "cuda":
        return []
    if stage == "generate":
        return [_engine_need(f"sources.{i}", s) for i, s in enumerate(cfg.sources)
                if s.backend == "vllm"]
    targets = [_engine_need(f"targets.{i}.engine", t.engine) for i, t in enumerate(cfg.targets)]
    if stage in ("respond", "score"):
        return targets
    if stage == "judge":  # the judge's answers, then each target's self-preference labels
        judge = [_engine_need("judge", cfg.judge)] if cfg.judge.backend == "vllm" else []
        return judge + [n for n, t in zip(targets, cfg.targets) if t.self_source]
    return []


def joins_cluster(res: ResourcesSection) -> str | None:
    """How this run joins a cluster (None: it starts a local Ray instance of its own), as
    ensure_ray decides it."""
    if res.ray_address:
        return f"resources.ray_address={res.ray_address}"
    if os.environ.get("RAY_ADDRESS"):
        return "inside `ray job submit` (RAY_ADDRESS is set)"
    return None


def can_grow(res: ResourcesSection) -> bool:
    """An autoscaling cluster that this run joins; a local instance never grows."""
    return res.autoscaling and joins_cluster(res) is not None


def resource_problems(cfg: ExperimentConfig, stages: list[str], node_gpus: list[float],
                      grow: bool | None = None,
                      node_types: list[str | None] | None = None) -> list[str]:
    """Each unit of work of `stages` that a cluster whose nodes have `node_gpus` GPUs (of
    GPU types `node_types`, when known) can never place, naming its key. A cluster that
    grows (default: `can_grow`) may add nodes of the request's GPU type (`gpu_type`): only
    a replica wider than one such node fails there. On a fixed cluster a request of a GPU
    type counts only the nodes of that type."""
    grow = can_grow(cfg.resources) if grow is None else grow
    out = []
    for stage in stages:
        for need in gpu_needs(cfg, stage):
            kind = gpu_type(cfg.resources, need.accelerator_type)
            where = f"{stage}: {need.key} needs {need.gpus} GPU(s)"
            gpus = node_gpus
            if not grow and node_types is not None and kind.name:
                gpus = [g for g, t in zip(node_gpus, node_types) if t == kind.name]
                where += f" of type {kind.name} ({need.type_key})"
            # a growing cluster adds nodes of the request's GPU type
            per_node = kind.gpus_per_node if grow else max(gpus, default=0)
            if need.one_node and need.gpus > per_node:
                out.append(f"{where} on one node; the largest node has {per_node:g}")
            elif not grow and need.gpus > sum(gpus):
                out.append(f"{where}; the cluster has {sum(gpus):g}")
    return out


def check_resources(cfg: ExperimentConfig, stages: str | list[str]) -> None:
    """Fail before a stage starts, naming the keys, when the cluster this run is on can
    never give what the stage asks for, instead of waiting forever for a placement (or,
    worse, running a GPU config on CPU)."""
    import ray

    stages = [stages] if isinstance(stages, str) else stages
    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    node_gpus = [r.get("GPU", 0) for r in alive]
    # the GPU type Ray detected on each node (or its config declared): accelerator_type:<t>
    node_types = [next((k.split(":", 1)[1] for k in r if k.startswith("accelerator_type:")),
                       None) for r in alive]
    problems = resource_problems(cfg, stages, node_gpus, node_types=node_types)
    if problems:
        device = engine_device(cfg)
        raise ResourceError(
            f"the cluster has {sum(node_gpus):g} GPU(s) "
            f"({'autoscaling' if can_grow(cfg.resources) else 'fixed size'}; vLLM engines "
            f"on {device}, resources.accelerator={cfg.resources.accelerator}): "
            + "; ".join(problems) + ". " + (
                "resources.autoscaling is set, but a local instance never grows: set "
                "resources.ray_address to join the autoscaling cluster. "
                if cfg.resources.autoscaling and not can_grow(cfg.resources) else "")
            + "Lower the request, join a bigger cluster "
            "(resources.ray_address), set resources.autoscaling: true on a cluster that adds "
            "nodes on demand, or run engines on CPU (resources.accelerator: cpu)")
