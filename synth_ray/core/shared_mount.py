"""`run.shared_mount: true` checked on every node before the first stage.

The flag says that the config's local paths (a local `run.dir`, a model folder, the
embedding model) are on a mount every node shares (NFS, EFS, Filestore). Readiness takes it
at its word (core/readiness.py); a node that does not mount them would fail deep inside an
engine or a training worker, or, worse for `run.dir`, write adapters into a folder of its
own that the driver never sees. So, with Ray up, a zero-resource task pinned to each node
looks for each path the workers read, and for a marker file that the driver has just
written into the run directory (a folder of the same name on every node's own disk is not
a shared mount): a node that lacks one stops the run, naming the key and the node.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synth_ray.core.config import ExperimentConfig

MARKER = ".shared-mount-check-"


def worker_paths(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(key, local path) for each path that engines, training workers or score tasks read
    on other nodes: the models the vLLM engines and trainers load, the embedding model."""
    from synth_ray.core.readiness import local_path

    out = [(f"sources.{i}.model", s.model) for i, s in enumerate(cfg.sources)
           if s.backend == "vllm"]
    out += [(f"targets.{i}.model", t.model) for i, t in enumerate(cfg.targets)]
    if cfg.judge.backend == "vllm":
        out.append(("judge.model", cfg.judge.model))
    out.append(("evaluation.embedding_model", cfg.evaluation.embedding_model))
    return [(key, path) for key, path in out if local_path(path)]


def unseen(paths: dict[str, str]) -> list[str]:
    """The keys whose path this node does not see (run on each node)."""
    return [key for key, path in paths.items() if not os.path.exists(os.path.expanduser(path))]


def shared_mount_errors(cfg: ExperimentConfig, run_root: Path) -> list[str]:
    """One line per path a node does not see, for a run with `run.shared_mount: true` that
    joins a cluster (Ray must be up); nothing to check otherwise."""
    from synth_ray.core.cluster import joins_cluster
    from synth_ray.core.node_env import on_every_node
    from synth_ray.core.storage import is_uri

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
