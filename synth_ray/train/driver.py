"""The Ray side of training, for any caller (the train stage, the toy pre-training): a Ray
Train run (`TorchTrainer` of `worker.train_func`) per group of adapters, several runs as Ray
Tune trials, and what a finished adapter leaves (its check, summary and loss curve).

A run is named by its caller's config alone and kept under its `storage`, so a rerun after a
crash or `kill -9` of the driver finds its checkpoints and resumes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from synth_ray.config import ExperimentConfig, TargetSection
from synth_ray.runtime.rundir import hash_json
from synth_ray.train.lora import AdapterError, check_adapter

log = logging.getLogger("synth_ray")


def train_run(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """A Ray Train run of these jobs (one target's), named after the first (and how many:
    plain characters, since the name is a folder, in a bucket too)."""
    first = jobs[0]
    name = first["run_name"] + (f"--{len(jobs)}-adapters" if len(jobs) > 1 else "")
    if first.get("job_hash"):  # another config, another run: no stale checkpoint resumed
        name += "--" + hash_json([j["job_hash"] for j in jobs])[:8]
    return {"jobs": jobs, "run_name": name, "storage": first["storage"],
            "target": first["target"], "config": first["config"]}


def _torch_trainer(run: dict[str, Any], target: TargetSection, callbacks: list | None = None):
    import os

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from synth_ray.runtime.cluster import train_scaling
    from synth_ray.train.worker import train_func

    cfg = ExperimentConfig.model_validate(run["config"])
    # Read by TorchTrainer.fit() in this process, which hands it to the run's controller.
    # Ray's 2 s default left each run ~2.5 s idle after its last step (the end is seen at a
    # poll); polling 8 workers 4 times a second costs little.
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(cfg.training.poll_interval_s)
    return TorchTrainer(
        train_func,
        train_loop_config=run,
        scaling_config=ScalingConfig(**train_scaling(cfg, target)),
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

    from synth_ray.runtime.rundir import atomic_write_with

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
    """Saved, checked, and trained with this job's settings (an adapter saved before synth-ray
    recorded them, with no `job_hash`, is taken as it is)."""
    try:
        check_adapter(job["output"])
        path = Path(job["output"]) / "training_summary.json"
        if not path.exists():
            return False
    except AdapterError:
        return False
    saved = json.loads(path.read_text()).get("job_hash")
    if saved is not None and job.get("job_hash") is not None and saved != job["job_hash"]:
        log.warning("[train] %s was trained with other settings (the config changed since): "
                    "training it again", job["output"])
        return False
    return True


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
