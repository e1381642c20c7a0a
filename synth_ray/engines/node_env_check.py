"""vLLM plugin (entry point `vllm.general_plugins`): every engine process checks, at its
start, that the variables the run needs on every node are set on its own (names from
$SYNTH_RAY_NODE_ENV, which the engine's runtime env carries; core/node_env.py). An engine on
a node that an autoscaler added without them fails here, naming the variable and the node,
before it downloads a byte; vLLM runs general plugins unguarded, so the error stops it."""

from __future__ import annotations


def register() -> None:
    from synth_ray.core.node_env import require_here

    require_here("vLLM engine")
