"""The experiment's configuration: what a run is told to do, checked before anything starts.

The package's face: the sections, the `ExperimentConfig` they make up, `load_config` /
`validate_config` / `dump_config`, the override syntax and the one error type,
`ConfigError`. Its modules import nothing of the runtime (no Ray, no vLLM), so a config is
validated completely in a second, before `ray.init`.
"""

from synth_ray.config.errors import ConfigError
from synth_ray.config.experiment import ExperimentConfig
from synth_ray.config.load import dump_config, load_config, validate_config
from synth_ray.config.model_sections import (
    EngineSection,
    HttpSection,
    JudgeSection,
    ResourcesSection,
    SourceSection,
    TargetSection,
)
from synth_ray.config.overrides import apply_overrides, parse_overrides
from synth_ray.config.sections import (
    LLAMA_PROJECTIONS,
    PAPER_SYSTEM_PROMPT,
    ConditionsSection,
    DatasetSection,
    EvaluationSection,
    GenerationSection,
    LoRASection,
    PerplexitySection,
    RehearsalSection,
    RunSection,
    SamplingSection,
    Section,
    SelfBleuSection,
    SplitSection,
    TrackingSection,
    TrainingSection,
)

__all__ = [
    "LLAMA_PROJECTIONS", "PAPER_SYSTEM_PROMPT", "ConditionsSection", "ConfigError",
    "DatasetSection", "EngineSection", "EvaluationSection", "ExperimentConfig",
    "GenerationSection", "HttpSection", "JudgeSection", "LoRASection", "PerplexitySection",
    "RehearsalSection", "ResourcesSection", "RunSection", "SamplingSection", "Section",
    "SelfBleuSection", "SourceSection", "SplitSection", "TargetSection",
    "TrackingSection", "TrainingSection", "apply_overrides", "dump_config", "load_config",
    "parse_overrides", "validate_config",
]
