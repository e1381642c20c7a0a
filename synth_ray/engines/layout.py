"""What a vLLM engine serves (`EngineSpec`), what every engine of a run shares (`EngineRun`,
read from the config once), how a replica is laid out on the run's device, and the
manifest's record of it. The processors (processors.py) are built from these two."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from synth_ray.config import (
    EngineSection,
    ExperimentConfig,
    GenerationSection,
    JudgeSection,
    ResourcesSection,
    SourceSection,
)
from synth_ray.runtime.cluster import engine_device, engine_placement


@dataclass(frozen=True)
class EngineSpec:
    """What a vLLM engine serves: a source, the judge, or a target with its LoRA adapters."""

    model: str
    revision: str | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    replicas: int = 1
    trust_remote_code: bool = False
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    # a run in a bucket: adapters are downloaded from `lora_uri`, named by their path under
    # the mirror's `lora_local` folder (storage.py)
    lora_local: str | None = None
    lora_uri: str | None = None
    name: str = ""  # the config key it comes from, for the log
    accelerator_type: str | None = None  # its section's; None: resources.accelerator_type

    @classmethod
    def of(cls, name: str, model: str, revision: str | None, trust_remote_code: bool,
           layout: EngineSection, **extra: Any) -> EngineSpec:
        """A model laid out as its config section says; `extra["engine_kwargs"]` are the
        caller's own (LoRA), under the section's."""
        kwargs = {k: v for k, v in (("gpu_memory_utilization", layout.gpu_memory_utilization),
                                    ("max_model_len", layout.max_model_len)) if v is not None}
        kwargs.update(extra.pop("engine_kwargs", {}))
        kwargs.update(layout.engine_kwargs)
        return cls(model, revision, layout.tensor_parallel_size, layout.pipeline_parallel_size,
                   layout.replicas, trust_remote_code, kwargs, name=name,
                   accelerator_type=layout.accelerator_type, **extra)

    @classmethod
    def of_source(cls, s: SourceSection) -> EngineSpec:
        return cls.of(f"source {s.name}", s.model, s.revision, s.trust_remote_code, s)

    @classmethod
    def of_judge(cls, j: JudgeSection) -> EngineSpec:
        return cls.of("judge", j.model, j.revision, j.trust_remote_code, j)


@dataclass(frozen=True)
class EngineRun:
    """What every vLLM engine of a run shares, read from the config once: the device, the
    cluster's resources section and the generation settings (batch size, context window,
    default sampling). A processor builder takes this and an EngineSpec, not the whole
    config, as ray.data.llm's builders take their one small config."""

    gpu: bool
    resources: ResourcesSection
    generation: GenerationSection

    @classmethod
    def of(cls, cfg: ExperimentConfig) -> EngineRun:
        return cls(engine_device(cfg) == "cuda", cfg.resources, cfg.generation)


def laid_out(run: EngineRun, spec: EngineSpec) -> tuple[EngineSpec, bool]:
    """(the spec as the engine is built, on GPU?): the config's device; on CPU a replica is
    one engine in one process, with no tensor or pipeline parallel."""
    gpu = run.gpu
    if gpu:
        return spec, True
    return replace(spec, tensor_parallel_size=1, pipeline_parallel_size=1), False


def engine_record(run: EngineRun, spec: EngineSpec) -> dict[str, Any]:
    """How an engine is built (device, parallelism, bundles), for the stage's manifest
    entry: a run on CPU engines says so there as well as in the log."""
    spec, gpu = laid_out(run, spec)
    placement = engine_placement(run.resources, spec.tensor_parallel_size,
                                 spec.pipeline_parallel_size, spec.accelerator_type, gpu)
    return {"name": spec.name, "model": spec.model, "device": "cuda" if gpu else "cpu",
            "tensor_parallel_size": spec.tensor_parallel_size,
            "pipeline_parallel_size": spec.pipeline_parallel_size, "replicas": spec.replicas,
            **placement}
