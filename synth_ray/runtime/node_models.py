"""The scheme models (`tiny://...`) a worker loads, made present on the worker's own node.

The driver resolves a scheme id to a folder of its cache and hands that path to the vLLM
engines and the Ray Train workers. On a cluster whose nodes share no disk the folder is not
on a worker's node, and vLLM would take the missing path for a hub repo id ("Repo id must
be in the form ..."), which is how the paper configs' first rehearsal on such a cluster
failed. So every engine process (the vLLM plugin engines/node_env_check.py, from the
engine's runtime env) and every Ray Train worker resolves the same ids on its own node at
its start:
- a model built from a seed (the toy scheme's random-weight models, seconds, the same
  weights on every node) is built there if it is missing;
- a model that only a training run builds is refused (a worker would train its own, other
  weights; runtime/node_files.py asks every node for those before the first stage);
- the folder must be the driver's path (the same `$SYNTH_RAY_CACHE` on every node), else
  the process fails naming both.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

VAR = "SYNTH_RAY_NODE_MODELS"  # {scheme id: the driver's folder}, in an engine's runtime env


# what to do about a model only a training run builds, missing on a node (node_files.py too)
UNBUILT_FIX = ("put the driver's $SYNTH_RAY_CACHE folder of it into every node's (the image, "
               "or a shared mount), or name a hub model")


def models_env(folders: dict[str, str]) -> dict[str, str]:
    """The engine runtime env's variable naming its scheme models: `folders` maps each model
    id to the folder the driver resolved it to (hub ids and paths are left out)."""
    from synth_ray.models import is_scheme_id

    spec = {u: f for u, f in folders.items() if is_scheme_id(u)}
    return {VAR: json.dumps(spec, sort_keys=True)} if spec else {}


def ensure_here(where: str, spec: dict[str, str] | None = None) -> None:
    """Each scheme model of `spec` (default: $SYNTH_RAY_NODE_MODELS) present on this node at
    the driver's path, built here when a seed builds it; else fail naming it."""
    from synth_ray.models import resolve_model, unbuilt

    if spec is None:
        spec = json.loads(os.environ.get(VAR) or "{}")
    node = socket.gethostname()
    for uri, path in spec.items():
        if Path(path).is_dir():  # the driver's node, a shared disk, or built here before
            continue
        if unbuilt([uri]):
            raise RuntimeError(
                f"{uri} is not built on node {node} ({where}), and only a training run "
                f"builds it: {UNBUILT_FIX}")
        got = _resolve_in_child(uri) if _distributed() else resolve_model(uri)
        if os.path.realpath(got) != os.path.realpath(path):
            raise RuntimeError(
                f"{uri} is {got} on node {node} ({where}) but {path} on the driver: give "
                "every node the same $SYNTH_RAY_CACHE (the driver passes its path)")


def _distributed() -> bool:
    dist = sys.modules.get("torch.distributed")
    return bool(dist and dist.is_available() and dist.is_initialized())


def _resolve_in_child(uri: str) -> str:
    """Build in a process of its own: a Ray Train worker has torch.distributed up, and
    transformers' save_pretrained then writes the weights on rank 0 only (a rank-1 node was
    left a folder with a tokenizer and no config)."""
    code = ("import sys; from synth_ray.models import resolve_model; "
            "print(resolve_model(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"building {uri} on node {socket.gethostname()} failed: "
                           f"{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]
