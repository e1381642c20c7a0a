"""The checks of `synth-ray run` (and each stage command) before work starts, cheapest first:
the config's readiness (runtime/readiness.py) before the run directory is touched, each pending
stage's own `preflight` before Ray starts, then, with Ray up, the variables every node needs
(runtime/node_env.py), that every node sees run.shared_mount's paths and has the built models
(runtime/node_files.py), and the cluster's fit for what the stages will place. Each refusal
exits 2 (a config problem) or 1 (a stage failed), naming what to change."""

from __future__ import annotations

import logging

import typer

from synth_ray.config import ExperimentConfig
from synth_ray.runtime.pipeline import get_stage

log = logging.getLogger("synth_ray")

EXIT_CONFIG = 2
EXIT_FAILED = 1
MODEL_STAGES = {"generate", "train", "respond", "score", "judge"}


def refuse(errors: list) -> None:
    """Exit 2 naming each error (a config key, a variable): nothing has started yet."""
    for e in errors:
        log.error("%s", e)
    if errors:
        raise typer.Exit(EXIT_CONFIG)


def checks_before_ray(ctx, pending: list[str]) -> None:
    """Each pending stage's own cheap checks (`preflight`: a source's API key variable, a
    local model path) before Ray starts: a typo fails in a second, recorded in the manifest
    as the stage's failure, not after a cluster and its engines came up."""
    for name in pending:
        check = getattr(get_stage(name).impl(), "preflight", None)
        if check is None:
            continue
        try:
            check(ctx.cfg)
        except Exception as e:
            ctx.run.mark_failed(name, f"{type(e).__name__}: {e}")
            log.error("[%s] failed: %s: %s (run dir %s)", name, type(e).__name__, e,
                      ctx.run.root)
            raise typer.Exit(EXIT_FAILED) from None


def cluster_checks(cfg: ExperimentConfig, names: list[str], run_root=None) -> None:
    """Before any stage: the plan's summary (for `run`), then the cluster checked against
    what the stages will place; exit 2 naming the keys when it can never fit, instead of
    waiting forever or running a GPU config on CPU."""
    from synth_ray.runtime.cluster import ResourceError, check_resources, ensure_ray
    from synth_ray.runtime.node_env import node_env_errors
    from synth_ray.runtime.node_files import shared_mount_errors, unbuilt_errors

    if len(names) > 1:
        from synth_ray.plan import make_plan, summary_lines

        for line in summary_lines(make_plan(cfg)):
            log.info("%s", line)
    try:
        ensure_ray(cfg.resources)
        # every node's problems at once (variables; run.shared_mount's paths, built models)
        refuse(node_env_errors(cfg) + (shared_mount_errors(cfg, run_root) + unbuilt_errors(cfg)
                                       if run_root is not None else []))
        check_resources(cfg, [n for n in names if n in MODEL_STAGES])
    except ConnectionError as e:
        log.error("resources.ray_address=%s: %s. Start the cluster (ray up cluster.yaml) or "
                  "set resources.ray_address=null for a local instance",
                  cfg.resources.ray_address, e)
        raise typer.Exit(EXIT_CONFIG) from None
    except ResourceError as e:
        log.error("%s", e)
        raise typer.Exit(EXIT_CONFIG) from None
