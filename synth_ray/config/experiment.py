"""The experiment's configuration as one pydantic v2 model: every section, in the order a run's
config.yaml lists them. The sections themselves, with every default and its meaning, are in
`sections.py` and `model_sections.py`; loading and checking are in `load.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synth_ray.config.model_sections import (
    JudgeSection,
    ResourcesSection,
    SourceSection,
    TargetSection,
)
from synth_ray.config.sections import (
    ConditionsSection,
    DatasetSection,
    EvaluationSection,
    GenerationSection,
    LoRASection,
    RehearsalSection,
    RunSection,
    Section,
    SplitSection,
    TrackingSection,
    TrainingSection,
)


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
        "(config/presets.py). paper: the authors' method as their code ran it.")

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
