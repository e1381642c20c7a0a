"""Which condition and training seed each judged adapter belongs to (both evaluations)."""

from __future__ import annotations

from synth_ray.config import ExperimentConfig
from synth_ray.design import VANILLA, adapter_grid


def condition_of(cfg: ExperimentConfig) -> dict[str, tuple[str, int | None]]:
    """Adapter name -> (condition, seed); the vanilla target is its own condition."""
    return {VANILLA: (VANILLA, None), **{n: (c, s) for c, s, n in adapter_grid(cfg)}}
