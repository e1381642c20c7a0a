"""The experiment's configuration: pydantic v2 models, loaded from YAML plus key=value overrides.

Every model is frozen and forbids unknown keys, so a typo is an error rather than a silently
ignored setting. `load_config` collects *all* problems (schema and cross-references) and raises
one `ConfigError` that names each bad key by its dotted path. It never imports Ray or vLLM, so
a config is validated completely before `ray.init`.

The sections themselves, with every default and its meaning, are in `sections.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from synth_ray.core.model_sections import (  # noqa: F401 - re-exported
    EngineSection,
    HttpSection,
    JudgeSection,
    ResourcesSection,
    SourceSection,
    TargetSection,
)
from synth_ray.core.overrides import apply_overrides, parse_overrides  # noqa: F401 - re-exported
from synth_ray.core.sections import (  # noqa: F401 - re-exported: the config's sections
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


class ConfigError(ValueError):
    """All problems of one config, each as 'key.path: message'."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")


class ExperimentConfig(Section):
    run: RunSection = RunSection()
    dataset: DatasetSection = DatasetSection()
    split: SplitSection = SplitSection()
    sources: list[SourceSection] = Field(default_factory=list)
    generation: GenerationSection = GenerationSection()
    conditions: ConditionsSection = ConditionsSection()
    targets: list[TargetSection] = Field(default_factory=list)
    lora: LoRASection = LoRASection()
    training: TrainingSection = TrainingSection()
    evaluation: EvaluationSection = EvaluationSection()
    judge: JudgeSection = JudgeSection()
    resources: ResourcesSection = ResourcesSection()
    tracking: TrackingSection = TrackingSection()
    rehearsal: RehearsalSection | None = Field(
        None, description="Set by `synth-ray rehearse` only: the swaps of a rehearsal.")
    # last, so a run's config.yaml opens with its run section as before
    preset: Literal["paper"] | None = Field(
        None, description="Fill every key of a named preset the config does not set itself "
        "(core/presets.py). paper: the authors' method as their code ran it.")

    def source(self, name: str) -> SourceSection:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(f"no source named {name!r}; known: {[s.name for s in self.sources]}")

    def training_system_prompt(self) -> str | None:
        """The training examples' system prompt: training.system_prompt, else the one the
        targets answer with (generation.system_prompt)."""
        t = self.training.system_prompt
        return t if t is not None else self.generation.system_prompt

    def brackets(self) -> dict[str, list[SourceSection]]:
        """Sources grouped by bracket, in config order."""
        out: dict[str, list[SourceSection]] = {}
        for s in self.sources:
            out.setdefault(s.bracket, []).append(s)
        return out

    def single_source_for(self, bracket: str) -> str:
        return self.conditions.single_source.get(bracket) or self.brackets()[bracket][0].name

    def multi_source_for(self, bracket: str) -> list[str]:
        chosen = self.conditions.multi_source.get(bracket)
        if chosen:
            return list(chosen)
        return [s.name for s in self.brackets()[bracket][: self.split.num_parts]]


def _format_loc(loc: tuple) -> str:
    # pydantic puts validator names (e.g. 'function-after[...]') in loc; they are not keys.
    return ".".join(str(p) for p in loc if not str(p).startswith(("function-", "tagged-")))


def validate_config(data: Any, source: str = "config") -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping, got {type(data).__name__}"], source)
    from synth_ray.core.presets import apply_preset

    data = apply_preset(data)
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        problems = [f"{_format_loc(err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()]
        raise ConfigError(problems, source) from None
    from synth_ray.core.config_checks import cross_reference_problems

    problems = cross_reference_problems(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file {str(path)!r} does not exist"], str(path))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError([f"not valid YAML: {e}"], str(path)) from None
    if overrides:
        data = apply_overrides(data, overrides)
    return validate_config(data, str(path))


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML. Holds no secrets: keys are only ever named by env var."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
