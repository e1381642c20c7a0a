"""DeepSpeed ZeRO-3 for targets that do not fit one GPU (the 70B target), from the
`training` and target sections, plus the gather that makes a LoRA save under ZeRO-3 real."""

from __future__ import annotations

import contextlib
from typing import Any

from synth_ray.config import TargetSection, TrainingSection


def zero3_config(training: TrainingSection, target: TargetSection, accum: int) -> dict[str, Any]:
    zero: dict[str, Any] = {
        "stage": 3,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "stage3_gather_16bit_weights_on_model_save": True,
    }
    if training.zero3_param_persistence_threshold is not None:
        zero["stage3_param_persistence_threshold"] = training.zero3_param_persistence_threshold
    if target.cpu_offload:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": target.per_device_batch_size,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": training.max_grad_norm,
        "bf16": {"enabled": training.dtype == "bfloat16"},
        "fp16": {"enabled": training.dtype == "float16"},
        "zero_optimization": zero,
        # we pass torch's AdamW; DeepSpeed's fused CPU Adam would need a compiler at run time
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def gathered(params: list, zero3: bool):
    """Inside this context every rank sees the full tensors of `params` (ZeRO-3 partitions
    them). Every rank must enter it; a plain save outside writes empty tensors."""
    if not zero3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
