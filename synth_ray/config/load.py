"""Loading a config: YAML plus key=value overrides, the preset filled in, validated.

Every model is frozen and forbids unknown keys, so a typo is an error rather than a silently
ignored setting. `load_config` collects *all* problems (schema and cross-references) and raises
one `ConfigError` that names each bad key by its dotted path. It never imports Ray or vLLM, so
a config is validated completely before `ray.init`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from synth_ray.config.checks import cross_reference_problems
from synth_ray.config.errors import ConfigError
from synth_ray.config.experiment import ExperimentConfig
from synth_ray.config.overrides import apply_overrides
from synth_ray.config.presets import apply_preset


def _format_loc(loc: tuple) -> str:
    # pydantic puts validator names (e.g. 'function-after[...]') in loc; they are not keys.
    return ".".join(str(p) for p in loc if not str(p).startswith(("function-", "tagged-")))


def validate_config(data: Any, source: str = "config") -> ExperimentConfig:
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping, got {type(data).__name__}"], source)
    data = apply_preset(data)
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        problems = [f"{_format_loc(err['loc']) or '<root>'}: {err['msg']}" for err in e.errors()]
        raise ConfigError(problems, source) from None
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
