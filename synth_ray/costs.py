"""What `synth-ray plan`'s GPU time costs beyond compute, and in dollars: the weights
ZeRO-3 gathers between nodes, and GPU-hours at each GPU type's price (plan.BASIS states
both assumptions)."""

from __future__ import annotations

from typing import Any

GIB = 1024**3
NET_EFFICIENCY = 0.7  # NCCL all-gather bus bandwidth against the link's line rate (assumption)
# gathers of the whole weights per micro-batch: forward and backward, and the forward again
# that gradient checkpointing recomputes
GATHERS, GATHERS_CHECKPOINTED = 2, 3
ZERO3_GATHERS = f"{GATHERS}-{GATHERS_CHECKPOINTED}"


def zero3_gather_hours(t, kind, weights_gib: float | None, nodes: int,
                       micro_steps: float) -> float:
    """Wall hours a ZeRO-3 run spends gathering weights between nodes (BASIS)."""
    if t.strategy != "deepspeed" or nodes < 2 or weights_gib is None or not kind.node_gbps:
        return 0.0
    received = weights_gib * GIB * (nodes - 1) / nodes  # bytes into each node per gather
    seconds = received / (kind.node_gbps / 8 * 1e9 * NET_EFFICIENCY)
    gathers = GATHERS_CHECKPOINTED if t.gradient_checkpointing else GATHERS
    return micro_steps * gathers * seconds / 3600.0


def gpu_usd(rows: list[dict[str, Any]]) -> tuple[float | None, float]:
    """(dollars of the rows' GPU-hours at their GPU type's price, hours with no price)."""
    usd, unpriced = None, 0.0
    for r in rows:
        if r.get("gpu_hours") and r.get("usd_per_gpu_hour") is not None:
            usd = (usd or 0.0) + r["gpu_hours"] * r["usd_per_gpu_hour"]
        elif r.get("gpu_hours"):
            unpriced += r["gpu_hours"]
    return (None if usd is None else round(usd, 2)), unpriced
