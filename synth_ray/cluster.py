"""Joining or starting the Ray cluster a stage runs on."""

from __future__ import annotations

import logging
import os

from synth_ray.config import ResourcesSection

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
