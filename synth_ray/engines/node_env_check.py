"""vLLM plugin (entry point `vllm.general_plugins`): every engine process checks, at its
start, what the run needs on its own node, from the engine's runtime env:
- the variables the run needs on every node ($SYNTH_RAY_NODE_ENV's names; runtime/node_env.py):
  an engine on a node that an autoscaler added without them fails here, naming the
  variable and the node, before it downloads a byte;
- the scheme models it loads ($SYNTH_RAY_NODE_MODELS; runtime/node_models.py): built on this
  node when a seed builds them, at the driver's path, before vLLM looks for the folder.
vLLM runs general plugins unguarded, so an error here stops the engine."""

from __future__ import annotations


def register() -> None:
    from synth_ray.runtime.node_env import require_here
    from synth_ray.runtime.node_models import ensure_here

    require_here("vLLM engine")
    ensure_here("vLLM engine")
