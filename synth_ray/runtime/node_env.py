"""The environment variables a run needs on every node, by name only (their values never
enter the config, the run directory, the logs or a runtime env that Ray's job API stores):

- `resources.node_env`: what the nodes need besides, e.g. HF_TOKEN for gated hub models
  (Llama, Gemma, Mistral, Command R+: the driver, every engine and every training worker
  download weights);
- each hosted (HTTP) source's and judge's `http.api_key_env`.

Where they are checked: before the first stage on every node the cluster has then (a
zero-resource task pinned to each node; the driver's own environment for a local run), and
again in every engine process (the vLLM plugin `engines/node_env_check.py`) and Ray Train
worker at its start, so a node that an autoscaler adds later fails at once, naming the
variable and the node, instead of a 401 deep in a download. cluster.yaml and
k8s/rayjob.yaml deliver them to every node (docs/cluster.md).
"""

from __future__ import annotations

import os
import socket

from synth_ray.config import ExperimentConfig
from synth_ray.runtime.cluster import CHECK_VAR, joins_cluster


def required_env(cfg: ExperimentConfig) -> dict[str, str]:
    """Variable name -> what needs it."""
    out = {name: "resources.node_env" for name in cfg.resources.node_env}
    for i, s in enumerate(cfg.sources):
        if s.backend == "http" and s.http and s.http.api_key_env:
            out.setdefault(s.http.api_key_env, f"sources.{i}.http.api_key_env ({s.name})")
    judge = cfg.judge
    if judge.backend == "http" and judge.http and judge.http.api_key_env:
        out.setdefault(judge.http.api_key_env, "judge.http.api_key_env")
    return out


def missing_here(names: list[str] | str | None = None) -> list[str]:
    """The names (default: $SYNTH_RAY_NODE_ENV's) unset or empty in this process."""
    if names is None:
        names = os.environ.get(CHECK_VAR, "")
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    return [n for n in names if not os.environ.get(n)]


def require_here(where: str, names: list[str] | None = None) -> None:
    """Fail this process (an engine, a training worker) if a variable it needs is unset
    (`names`, default $SYNTH_RAY_NODE_ENV's)."""
    gone = missing_here(names)
    if gone:
        raise RuntimeError(
            f"{', '.join(gone)} not set on node {socket.gethostname()} ({where}): every node "
            "needs it (resources.node_env / http.api_key_env); cluster.yaml and "
            "k8s/rayjob.yaml deliver it (docs/cluster.md)")


def on_every_node(fn, *args) -> dict[str, object]:
    """Node (its address, id and whether it is the head) -> `fn(*args)` run there, for every
    node alive now: a zero-resource task pinned to each."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(fn)
    refs = {}
    for n in (n for n in ray.nodes() if n.get("Alive")):
        head = " (head)" if "node:__internal_head__" in n["Resources"] else ""
        where = f"{n['NodeManagerAddress']} node {n['NodeID'][:8]}{head}"
        refs[where] = probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(*args)
    return {node: ray.get(ref, timeout=300) for node, ref in refs.items()}


def missing_on_nodes(names: list[str]) -> dict[str, list[str]]:
    """Node -> the names unset there, for every node alive now (never a value comes back)."""
    return {node: gone for node, gone in on_every_node(missing_here, names).items() if gone}


def node_env_errors(cfg: ExperimentConfig) -> list[str]:
    """One line per variable a node lacks: every node of the cluster the run joins, or this
    machine for a local instance (Ray must be up)."""
    need = required_env(cfg)
    if not need:
        return []
    gone = (missing_on_nodes(list(need)) if joins_cluster(cfg.resources)
            else {"this machine": missing_here(list(need))})
    return [f"{name} is not set on {node} ({need[name]}): set it in the node's environment "
            "(docs/cluster.md, \"Secrets\"), never in the config"
            for node, names in gone.items() for name in names]
