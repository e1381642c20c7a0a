"""What the workers read from their own node's disk, checked on every node before the
first stage of a run that joins a cluster (a zero-resource task pinned to each node; Ray
must be up). A node that lacks one stops the run, naming the key and the node, instead of
failing deep inside an engine or a training worker, or working on its own copy.

- **`run.shared_mount: true`** says that the config's local paths (a local `run.dir`, a
  model folder, the embedding model) are on a mount every node shares (NFS, EFS,
  Filestore). Readiness takes it at its word (runtime/readiness.py); here each node looks for
  each path the workers read, and for a marker file the driver has just written into the
  run directory (a folder of the same name on every node's own disk is not a shared mount:
  adapters written there would never reach the driver).
- **Models built by a training run** (a scheme's, e.g. `tiny://`'s pre-trained models and
  SmolLM2 variants, which the driver builds into its cache): a node without them would
  train its own on first use, minutes inside an engine, and other weights than the
  driver's, so adapters trained on one node would be served on another base. Each node
  must have them in its `$SYNTH_RAY_CACHE` (the node image, or a shared mount).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synth_ray.config import ExperimentConfig

MARKER = ".shared-mount-check-"


def worker_models(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(key, model) for each model that the vLLM engines and trainers load on other nodes."""
    out = [(f"sources.{i}.model", s.model) for i, s in enumerate(cfg.sources)
           if s.backend == "vllm"]
    out += [(f"targets.{i}.model", t.model) for i, t in enumerate(cfg.targets)]
    if cfg.judge.backend == "vllm":
        out.append(("judge.model", cfg.judge.model))
    return out


def worker_paths(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(key, local path) for each path that engines, training workers or score tasks read
    on other nodes: the models, the embedding model."""
    from synth_ray.config.uris import local_path

    out = [*worker_models(cfg), ("evaluation.embedding_model", cfg.evaluation.embedding_model)]
    return [(key, path) for key, path in out if local_path(path)]


def unseen(paths: dict[str, str]) -> list[str]:
    """The keys whose path this node does not see (run on each node)."""
    return [key for key, path in paths.items() if not os.path.exists(os.path.expanduser(path))]


def scheme_models(cfg: ExperimentConfig) -> dict[str, str]:
    """Key -> scheme id, for each model the workers load."""
    from synth_ray.models import is_scheme_id

    return {key: m for key, m in worker_models(cfg) if is_scheme_id(m)}


def unbuilt_here(models: dict[str, str]) -> list[str]:
    """The keys whose scheme model this node lacks (run on each node)."""
    from synth_ray.models import unbuilt

    gone = set(unbuilt(models.values()))
    return [key for key, uri in models.items() if uri in gone]


def unbuilt_errors(cfg: ExperimentConfig) -> list[str]:
    """One line per trained scheme model a node lacks, for a run that joins a cluster."""
    from synth_ray.runtime.cluster import joins_cluster
    from synth_ray.runtime.node_env import on_every_node
    from synth_ray.runtime.node_models import UNBUILT_FIX

    models = scheme_models(cfg)
    if joins_cluster(cfg.resources) is None or not models:
        return []
    return [f"{key}: {models[key]} is not built on {node}, and a worker there would train "
            f"its own (minutes, and other weights than the driver's): {UNBUILT_FIX}"
            for node, keys in on_every_node(unbuilt_here, models).items() for key in keys]


def shared_mount_errors(cfg: ExperimentConfig, run_root: Path) -> list[str]:
    """One line per path a node does not see, for a run with `run.shared_mount: true` that
    joins a cluster (Ray must be up); nothing to check otherwise."""
    from synth_ray.config.uris import is_uri
    from synth_ray.runtime.cluster import joins_cluster
    from synth_ray.runtime.node_env import on_every_node

    if not cfg.run.shared_mount or joins_cluster(cfg.resources) is None:
        return []
    paths = {key: str(Path(p).expanduser().resolve()) for key, p in worker_paths(cfg)}
    marker = None
    if not is_uri(cfg.run.dir):
        marker = Path(run_root).resolve() / f"{MARKER}{uuid.uuid4().hex}"
        marker.write_text("written by the driver; every node must see it\n")
        paths["run.dir"] = str(marker)
    try:
        gone = on_every_node(unseen, paths)
    finally:
        if marker is not None:
            marker.unlink(missing_ok=True)
    shown = {**paths, "run.dir": str(Path(run_root).resolve())}
    return [f"{key}: {shown[key]} is not on {node}, though run.shared_mount is true (every "
            "node must mount it at the same path): mount it there, or give "
            f"{'a bucket URI' if key == 'run.dir' else 'a hub id'} and run.shared_mount=false"
            for node, keys in gone.items() for key in keys]
