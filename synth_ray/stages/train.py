"""Stage `train`: one LoRA adapter per (target, condition, seed) with Ray Train, the grid run
as Ray Tune trials (several at once where the cluster has room, one by one on a laptop;
`synth_ray/train/driver.py`).

A Ray Train run trains one adapter, or `training.adapters_per_run` of them in turn. Each
run lives under `<run.dir>/ray_train/<name>`, its name fixed by the config: a rerun after a
crash or `kill -9` of the driver resumes from its last checkpoint; a finished adapter
(saved, checked) is skipped. The jobs and the runs they are grouped into are
`synth_ray/train/jobs.py`'s.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from synth_ray.design import condition_names, dataset_path
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import hash_file
from synth_ray.train.board import watch_steps
from synth_ray.train.driver import done, finish_adapter, fit_run, run_trials
from synth_ray.train.jobs import jobs, train_runs

log = logging.getLogger("synth_ray")


def run_grid(ctx: Context, todo: list[dict[str, Any]]) -> None:
    # Tune's experiment state too in the bucket of a run kept in one (trials run anywhere)
    run_trials(todo, ctx.run.uri("ray_tune") or ctx.run.root.resolve() / "ray_tune",
               "train-grid", ctx.cfg.training.parallel_trials)


def inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    return {
        "datasets": {c: hash_file(ctx.run.path(dataset_path(c)))
                     for c in condition_names(cfg)},
        "targets": [t.hashed() for t in cfg.targets],
        "lora": cfg.lora.model_dump(),
        # how the work is scheduled and batched, not what is learned (padding-free and the
        # chunked loss have the padded batch's maths): changing them retrains nothing
        "training": cfg.training.model_dump(exclude={"parallel_trials", "max_failures",
                                                      "adapters_per_run", "poll_interval_s",
                                                      "padding_free", "loss_chunk_tokens",
                                                      "system_prompt"}),
        # the prompt the examples are written with (training.system_prompt or the answers')
        "system_prompt": cfg.training_system_prompt(),
    }


def run(ctx: Context) -> StageOutput:
    from synth_ray.runtime.cluster import check_resources, ensure_ray, train_scaling

    if not ctx.cfg.targets:
        raise ValueError("targets: no target to train; add one to the config")
    import importlib.util

    for i, t in enumerate(ctx.cfg.targets):  # an optional part: say which extra brings it
        if t.strategy == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
            raise ImportError(f"targets.{i}.strategy: 'deepspeed' needs DeepSpeed, which is "
                              "not installed: pip install 'synth-ray[zero3]' (the gpu and cpu "
                              "extras include it)")
    all_jobs = jobs(ctx.cfg, ctx.run)
    for j in all_jobs:
        j["done"] = done(j)
    todo = [r for r in train_runs(ctx.cfg, all_jobs) if not all(j["done"] for j in r["jobs"])]
    left = sum(not j["done"] for j in all_jobs)
    log.info("[train] %d adapter(s): %d already trained, %d to train in %d Ray Train run(s), "
             "%d at a time", len(all_jobs), len(all_jobs) - left, left, len(todo),
             ctx.cfg.training.parallel_trials)
    # what Ray Train is asked for, per target: in the log and the stage's manifest entry
    placement = {t.name: train_scaling(ctx.cfg, t) for t in ctx.cfg.targets}
    for name, p in placement.items():
        log.info("[train] %s: %d worker(s) of %s on %s, %s", name, p["num_workers"],
                 p["resources_per_worker"], p.get("accelerator_type") or (
                     "any GPU" if p["use_gpu"] else "CPUs"), p["placement_strategy"])
    if todo:
        ensure_ray(ctx.cfg.resources)
        check_resources(ctx.cfg, "train")
        with watch_steps() as board:
            for j in all_jobs:  # what rank 0 of each Train run reports to, besides Ray
                j["board"] = board
                if not j["done"]:
                    j["tracking"] = ctx.tracker.adapter_run(j)
            if len(todo) == 1:
                fit_run(todo[0])
            else:
                run_grid(ctx, todo)
        ctx.run.pull("adapters")  # a run in a bucket: what the workers uploaded
    summaries = {j["run_name"]: finish_adapter(j) for j in all_jobs}
    for name, s in summaries.items():
        log.info("[train] %s: %d steps, best validation loss %.4f at step %d%s", name,
                 s["steps"], s["best_val_loss"], s["best_step"],
                 " (stopped early)" if s["stopped_early"] else "")
        for note in s.get("batching_notes", []):  # a setting the model or strategy refused
            log.warning("[train] %s: %s", name, note)
    root = ctx.run.root.resolve()
    outputs = [str(Path(j["output"]).relative_to(root) / "adapter_model.safetensors")
               for j in all_jobs]
    return StageOutput(outputs, {n: s["steps"] for n, s in summaries.items()},
                       f"{len(all_jobs)} adapter(s) trained",
                       {"adapters": summaries, "placement": placement})
