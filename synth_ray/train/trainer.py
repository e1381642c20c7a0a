"""Stage `train`: one LoRA adapter per (target, condition, seed) with Ray Train, the grid run
as Ray Tune trials (several at once where the cluster has room, one by one on a laptop).

A Ray Train run trains one adapter, or `training.adapters_per_run` of them in turn. Each
run lives under `<run.dir>/ray_train/<name>`, its name fixed by the config: a rerun after a
crash or `kill -9` of the driver resumes from its last checkpoint; a finished adapter
(saved, checked) is skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from synth_ray.conditions import condition_names
from synth_ray.config import ExperimentConfig, TargetSection
from synth_ray.pipeline import Context, StageOutput
from synth_ray.rundir import hash_file
from synth_ray.tiny import resolve_model
from synth_ray.train.lora import AdapterError, check_adapter

log = logging.getLogger("synth_ray")


def adapter_name(cfg: ExperimentConfig, condition: str, seed: int) -> str:
    return condition if len(cfg.training.seeds) == 1 else f"{condition}-seed{seed}"


def adapter_grid(cfg: ExperimentConfig) -> list[tuple[str, int, str]]:
    """(condition, seed, adapter name) of every adapter a target gets."""
    return [(c, s, adapter_name(cfg, c, s))
            for c in condition_names(cfg) for s in cfg.training.seeds]


def jobs(ctx: Context) -> list[dict[str, Any]]:
    cfg = ctx.cfg
    out = []
    root = ctx.run.root.resolve()
    run = ctx.run
    for target in cfg.targets:
        for condition, seed, name in adapter_grid(cfg):
            dataset = ("datasets", f"{condition}.parquet")
            adapter = ("adapters", target.name, name)
            out.append({
                "config": cfg.model_dump(mode="json"), "target": target.name,
                "condition": condition, "seed": seed,
                # a run in a bucket: workers, on any node, read and write the bucket
                "dataset": run.uri(*dataset) or str(root.joinpath(*dataset)),
                "model_path": resolve_model(target.model),
                "output": str(root.joinpath(*adapter)),
                "output_uri": run.uri(*adapter),
                "run_name": f"{target.name}--{name}",
                "storage": run.uri("ray_train") or str(root / "ray_train"),
            })  # fmt: skip
    return out


def train_runs(cfg: ExperimentConfig, all_jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Ray Train runs: `training.adapters_per_run` adapters of one target each, in grid
    order. Set by the config alone, not by what is done yet, so a rerun finds each run's
    checkpoints under the same name."""
    per = cfg.training.adapters_per_run
    runs = []
    for target in cfg.targets:
        mine = [j for j in all_jobs if j["target"] == target.name]
        runs += [train_run(mine[i:i + per]) for i in range(0, len(mine), per)]
    return runs


def train_run(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """A Ray Train run of these jobs (one target's), named after the first (and how many:
    plain characters, since the name is a folder, in a bucket too)."""
    first = jobs[0]
    name = first["run_name"] + (f"--{len(jobs)}-adapters" if len(jobs) > 1 else "")
    return {"jobs": jobs, "run_name": name, "storage": first["storage"],
            "target": first["target"], "config": first["config"]}


def _torch_trainer(run: dict[str, Any], target: TargetSection, callbacks: list | None = None):
    import os

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from synth_ray.train.worker import train_func

    cfg = ExperimentConfig.model_validate(run["config"])
    # Read by TorchTrainer.fit() in this process, which hands it to the run's controller.
    # Ray's 2 s default left each run ~2.5 s idle after its last step (the end is seen at a
    # poll); polling 8 workers 4 times a second costs little.
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(cfg.training.poll_interval_s)
    return TorchTrainer(
        train_func,
        train_loop_config=run,
        scaling_config=ScalingConfig(num_workers=target.num_workers, use_gpu=target.use_gpu,
                                     resources_per_worker={"CPU": target.cpus_per_worker,
                                                           **({"GPU": 1} if target.use_gpu
                                                              else {})}),
        torch_config=TorchConfig(backend="nccl" if target.use_gpu else "gloo"),
        run_config=RunConfig(
            name=run["run_name"],
            storage_path=run["storage"],
            failure_config=FailureConfig(max_failures=cfg.training.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
        ),
    )


def fit_run(run: dict[str, Any], callbacks: list | None = None) -> None:
    """Train a run's adapters (or resume the run)."""
    cfg = ExperimentConfig.model_validate(run["config"])
    target = next(t for t in cfg.targets if t.name == run["target"])
    result = _torch_trainer(run, target, callbacks).fit()
    if result.error:
        raise RuntimeError(f"training {run['run_name']} failed: {result.error}")


def fit_adapter(job: dict[str, Any]) -> dict[str, Any]:
    """Train one adapter (or resume its run); returns its training summary."""
    fit_run(train_run([job]))
    return finish_adapter(job)


def _tune_trial(params: dict[str, Any]) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    fit_run(params["run"], callbacks=[TuneReportCallback()])


def finish_adapter(job: dict[str, Any]) -> dict[str, Any]:
    out = Path(job["output"])
    info = check_adapter(out)
    summary = json.loads((out / "training_summary.json").read_text())
    plot_loss_curve(summary["history"], out / "loss_curve.png", job["run_name"])
    return {"adapter": str(out), **info,
            **{k: v for k, v in summary.items() if k != "history"}}


def plot_loss_curve(history: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synth_ray.rundir import atomic_write_with

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train loss")
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def done(job: dict[str, Any]) -> bool:
    try:
        check_adapter(job["output"])
        return (Path(job["output"]) / "training_summary.json").exists()
    except AdapterError:
        return False


def run_grid(ctx: Context, todo: list[dict[str, Any]]) -> None:
    # Tune's experiment state too in the bucket of a run kept in one (trials run anywhere)
    run_trials(todo, ctx.run.uri("ray_tune") or ctx.run.root.resolve() / "ray_tune",
               "train-grid", ctx.cfg.training.parallel_trials)


def run_trials(todo: list[dict[str, Any]], storage: Path | str, name: str,
               parallel: int) -> None:
    """Ray Train runs (`train_run`) as Ray Tune trials, each a TorchTrainer. A trial asks
    for no CPU itself (its workers do), so trials never starve their own workers on a small
    machine."""
    from ray import tune

    trainable = tune.with_resources(_tune_trial, {"cpu": 0, "memory": 64 * 1024**2})
    tuner = tune.Tuner(
        trainable,
        param_space={"run": tune.grid_search(todo)},
        tune_config=tune.TuneConfig(max_concurrent_trials=parallel),
        run_config=tune.RunConfig(storage_path=str(storage), name=name, verbose=0),
    )
    results = tuner.fit()
    failed = [r for r in results if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(todo)} training run(s) failed; first: "
                           f"{failed[0].error}")


def inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    return {
        "datasets": {c: hash_file(ctx.run.path("datasets", f"{c}.parquet"))
                     for c in condition_names(cfg)},
        "targets": [t.model_dump() for t in cfg.targets],
        "lora": cfg.lora.model_dump(),
        "training": cfg.training.model_dump(exclude={"parallel_trials", "max_failures",
                                                      "adapters_per_run", "poll_interval_s"}),
        "system_prompt": cfg.generation.system_prompt,
    }


def run(ctx: Context) -> StageOutput:
    from synth_ray.cluster import check_resources, ensure_ray

    if not ctx.cfg.targets:
        raise ValueError("targets: no target to train; add one to the config")
    all_jobs = jobs(ctx)
    for j in all_jobs:
        j["done"] = done(j)
    todo = [r for r in train_runs(ctx.cfg, all_jobs) if not all(j["done"] for j in r["jobs"])]
    left = sum(not j["done"] for j in all_jobs)
    log.info("[train] %d adapter(s): %d already trained, %d to train in %d Ray Train run(s), "
             "%d at a time", len(all_jobs), len(all_jobs) - left, left, len(todo),
             ctx.cfg.training.parallel_trials)
    if todo:
        ensure_ray(ctx.cfg.resources)
        check_resources(ctx.cfg, "train")
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
    root = ctx.run.root.resolve()
    outputs = [str(Path(j["output"]).relative_to(root) / "adapter_model.safetensors")
               for j in all_jobs]
    return StageOutput(outputs, {n: s["steps"] for n, s in summaries.items()},
                       f"{len(all_jobs)} adapter(s) trained", {"adapters": summaries})
