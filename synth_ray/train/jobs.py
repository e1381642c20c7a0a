"""The train stage's work, from the config and the run directory alone: one job per
(target, condition, seed) of the adapter grid, each with the hash of what it learns from
(`job_hash`), and the Ray Train runs the jobs are grouped into (`train_runs`), named so a
rerun finds each run's checkpoints (`driver.train_run`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synth_ray.config import ExperimentConfig
from synth_ray.design import adapter_dir, adapter_grid, dataset_path
from synth_ray.models import resolve_model
from synth_ray.runtime.rundir import RunDir, hash_file, hash_json
from synth_ray.train.driver import train_run

# settings that change how adapters are scheduled or watched, never what they learn
NOT_LEARNED = {"training": ("parallel_trials", "adapters_per_run", "poll_interval_s",
                            "report_every_steps", "max_failures"),
               "target": ("engine", "published", "self_source")}


def job_hash(cfg: ExperimentConfig, target: Any, condition: str, seed: int,
             dataset: Path) -> str:
    """What one adapter learns from: its training set's bytes, the target, LoRA and training
    settings, and its seed. A finished adapter with another hash (the config changed since)
    is trained again, not reused; its Ray Train run gets a new name, so no checkpoint of the
    old settings is resumed either."""
    training = {k: v for k, v in cfg.training.hashed().items()
                if k not in NOT_LEARNED["training"] + ("seeds",)}
    tgt = {k: v for k, v in target.hashed().items() if k not in NOT_LEARNED["target"]}
    return hash_json({"training": training, "target": tgt, "lora": cfg.lora.hashed(),
                      "condition": condition, "seed": seed,
                      "dataset": hash_file(dataset) if dataset.exists() else None})


def jobs(cfg: ExperimentConfig, run: RunDir) -> list[dict[str, Any]]:
    out = []
    root = run.root.resolve()
    for target in cfg.targets:
        for condition, seed, name in adapter_grid(cfg):
            dataset = dataset_path(condition).split("/")
            adapter = adapter_dir(target.name, name).split("/")
            out.append({
                "job_hash": job_hash(cfg, target, condition, seed, root.joinpath(*dataset)),
                "config": cfg.model_dump(mode="json"), "target": target.name,
                "condition": condition, "seed": seed,
                # a run in a bucket: workers, on any node, read and write the bucket
                "dataset": run.uri(*dataset) or str(root.joinpath(*dataset)),
                "model": target.model,  # a scheme id: resolved again on each worker's node
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
