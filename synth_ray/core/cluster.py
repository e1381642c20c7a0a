"""Joining or starting the Ray cluster a stage runs on."""

from __future__ import annotations

import logging
import os

from synth_ray.core.config import ExperimentConfig, ResourcesSection

log = logging.getLogger("synth_ray")


def engine_env(res: ResourcesSection) -> dict[str, str]:
    """Environment that engine actors need; names only, never secrets."""
    return {"VLLM_CPU_KVCACHE_SPACE": str(res.vllm_cpu_kvcache_gib)}


def ensure_ray(res: ResourcesSection) -> None:
    """Connect to `resources.ray_address`, or start a local instance whose dashboard listens
    on `resources.dashboard_host` (127.0.0.1 by default, never a public interface)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.update(engine_env(res))  # local workers inherit the driver's environment
    kwargs: dict = {"log_to_driver": True, "configure_logging": False}
    if res.ray_address:
        kwargs["address"] = res.ray_address
    elif os.environ.get("RAY_ADDRESS"):
        pass  # inside `ray job submit`: join the job's cluster, which has its own resources
    else:
        kwargs.update(
            num_cpus=res.num_cpus, num_gpus=res.num_gpus, dashboard_host=res.dashboard_host
        )
    info = ray.init(**kwargs)
    log.info("ray: %s (dashboard %s)", res.ray_address or "local instance",
             getattr(info, "dashboard_url", None) or "off")


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


class ResourceError(RuntimeError):
    """The config asks for more than the cluster can ever give."""


def gpu_needs(cfg: ExperimentConfig, stage: str) -> list[tuple[str, int]]:
    """(config key, GPUs one unit needs) for what `stage` places: a training run, an engine
    replica (tensor x pipeline parallel), the judge."""
    if stage == "train":
        return [(f"targets.{i}", t.num_workers) for i, t in enumerate(cfg.targets) if t.use_gpu]
    if stage == "generate":
        return [(f"sources.{i}", s.tensor_parallel_size * s.pipeline_parallel_size)
                for i, s in enumerate(cfg.sources) if s.backend == "vllm"]
    if stage == "judge" and cfg.judge.backend == "vllm":
        return [("judge", cfg.judge.tensor_parallel_size)]
    return []


def check_resources(cfg: ExperimentConfig, stage: str) -> None:
    """Fail at once, naming the key, when one unit of work needs more GPUs than the cluster
    has, instead of waiting forever for a placement. An autoscaling cluster
    (`resources.autoscaling`) may grow, so it is not checked. Engines on a cluster without
    GPUs run on CPU (vLLM-cpu), so only training asks for GPUs there."""
    import ray

    if cfg.resources.autoscaling:
        return
    gpus = ray.cluster_resources().get("GPU", 0)
    needs = gpu_needs(cfg, stage)
    if not gpus:
        needs = [(k, n) for k, n in needs if k.startswith("targets")]
    short = [f"{k} needs {n} GPU(s)" for k, n in needs if n > gpus]
    if short:
        raise ResourceError(
            f"the cluster has {gpus:g} GPU(s): {'; '.join(short)}. Lower the request, join a "
            "bigger cluster (resources.ray_address), or set resources.autoscaling: true if "
            "the cluster adds nodes on demand")
