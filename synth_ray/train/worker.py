"""The function every Ray Train worker runs: the run's adapters one after the other (one
per run unless `training.adapters_per_run` says more), each a LoRA adapter for one (target,
condition, seed), or, with `job["full"]`, full fine-tuning of every weight (how the tiny
pre-trained family learns its corpora: `synth_ray/toy/pretrain.py`). Each adapter is one
`recipe.AdapterRun`; its checkpoints name their adapter, so a replaced worker resumes that
adapter where the last checkpoint left off and skips the ones saved before it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synth_ray.train.recipe import AdapterRun

FULL_VERSION = 2  # part of the pre-trained models' cache key: bump when full training changes


def train_func(run: dict[str, Any]) -> None:
    """A Ray Train run's adapters in order. The latest checkpoint names the adapter it
    belongs to: the ones before it were saved before it began, so they are skipped, as are
    those the driver found saved (`done`)."""
    import ray.train

    from synth_ray.models import is_scheme_id
    from synth_ray.runtime.node_env import require_here
    from synth_ray.runtime.node_models import ensure_here

    # a worker on a node without HF_TOKEN (say) fails now, naming it, not in a download
    require_here("Ray Train worker", run["config"].get("resources", {}).get("node_env", []))
    jobs = run["jobs"]
    # a scheme model (tiny://) present on this node, at the driver's path (node_models.py)
    ensure_here("Ray Train worker", {j["model"]: j["model_path"] for j in jobs
                                     if is_scheme_id(j.get("model", ""))})
    names = [j["run_name"] for j in jobs]
    ckpt = ray.train.get_checkpoint()
    first = 0
    if ckpt:
        with ckpt.as_directory() as d:
            adapter = json.loads((Path(d) / "state.json").read_text()).get("adapter") or names[0]
        if adapter in names:
            first = names.index(adapter)
        else:  # the run's storage holds another grid's run: start over, as a new name would
            print(f"checkpoint of adapter {adapter!r}, not one of this run's {names}: ignored")
            ckpt = None
    for i, job in enumerate(jobs):
        if i >= first and not job.get("done"):
            train_adapter(job, ckpt if i == first else None)


def train_adapter(job: dict[str, Any], ckpt) -> None:
    """One adapter (or full fine-tuning), resumed from `ckpt` if given: a recipe's steps in
    order, as torchtune's `recipe_main` runs them. The run is local to this call, so its
    model, optimizer and engine are let go before the next adapter begins."""
    run = AdapterRun(job)
    run.setup()
    run.resume(ckpt)
    run.train()
    run.finish()
