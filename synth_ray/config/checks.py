"""Config checks that span sections (each problem names the key it is about); the
per-field checks live on the section models (`sections.py`, `model_sections.py`)."""

from __future__ import annotations

from synth_ray.config.experiment import ExperimentConfig
from synth_ray.config.uris import is_uri
from synth_ray.prompts import FORCED_DECODING


def cross_reference_problems(cfg: ExperimentConfig) -> list[str]:
    """Checks that span sections; each problem names the key it is about."""
    return (_source_problems(cfg) + _target_problems(cfg) + gpu_type_problems(cfg)
            + _judge_problems(cfg) + _tracking_problems(cfg))


def _source_problems(cfg: ExperimentConfig) -> list[str]:
    """Source names, and the conditions' brackets and sources."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, s in enumerate(cfg.sources):
        if s.name in seen:
            problems.append(f"sources.{i}.name: duplicate source name {s.name!r}")
        seen.add(s.name)
    brackets = cfg.brackets()
    names = {s.name for s in cfg.sources}
    for bracket, src in cfg.conditions.single_source.items():
        key = f"conditions.single_source.{bracket}"
        if bracket not in brackets:
            problems.append(f"{key}: unknown bracket; known: {sorted(brackets)}")
        elif src not in {s.name for s in brackets[bracket]}:
            problems.append(f"{key}: {src!r} is not a source of bracket {bracket!r}")
    for bracket, srcs in cfg.conditions.multi_source.items():
        key = f"conditions.multi_source.{bracket}"
        if bracket not in brackets:
            problems.append(f"{key}: unknown bracket; known: {sorted(brackets)}")
            continue
        if len(srcs) != cfg.split.num_parts:
            problems.append(
                f"{key}: lists {len(srcs)} sources but split.num_parts is {cfg.split.num_parts}"
            )
        for j, src in enumerate(srcs):
            if src not in names:
                problems.append(f"{key}.{j}: unknown source {src!r}")
    for bracket, members in brackets.items():
        if bracket not in cfg.conditions.multi_source and len(members) < cfg.split.num_parts:
            problems.append(
                f"sources: bracket {bracket!r} has {len(members)} source(s), fewer than "
                f"split.num_parts={cfg.split.num_parts}; add sources or set "
                f"conditions.multi_source.{bracket}"
            )
    return problems


def _target_problems(cfg: ExperimentConfig) -> list[str]:
    problems: list[str] = []
    names = {s.name for s in cfg.sources}
    seen_t: set[str] = set()
    for i, t in enumerate(cfg.targets):
        if t.name in seen_t:
            problems.append(f"targets.{i}.name: duplicate target name {t.name!r}")
        seen_t.add(t.name)
        if t.effective_batch_size % (t.per_device_batch_size * t.num_workers):
            problems.append(
                f"targets.{i}.effective_batch_size: {t.effective_batch_size} is not a multiple "
                f"of per_device_batch_size*num_workers = {t.per_device_batch_size * t.num_workers}"
            )
    for i, t in enumerate(cfg.targets):
        if t.strategy == "deepspeed" and cfg.training.autocast != "none":
            problems.append(f"training.autocast: {cfg.training.autocast!r} with targets.{i} "
                            "on DeepSpeed, which sets its precision from training.dtype; "
                            "set training.autocast: none")
        if t.self_source is not None and t.self_source not in names:
            problems.append(f"targets.{i}.self_source: unknown source {t.self_source!r}; "
                            f"known: {sorted(names)}")
    return problems


def _judge_problems(cfg: ExperimentConfig) -> list[str]:
    problems: list[str] = []
    judge = cfg.judge
    if judge.backend == "http" and judge.http is None:
        problems.append("judge.http: backend 'http' needs an 'http' section with base_url")
    if judge.quality_threshold > judge.quality_max:
        problems.append(f"judge.quality_threshold: {judge.quality_threshold} is above the quality "
                        f"scale's maximum judge.quality_max={judge.quality_max}")
    if judge.backend == "http" and judge.decoding == "guided":
        problems.append("judge.decoding: guided forces the answer format with vLLM's "
                        "structured output, which an API judge does not take; use sampled "
                        "(the authors' free text) or backend: vllm")
    if (judge.backend == "vllm" and judge.decoding in FORCED_DECODING
            and judge.sampling.max_tokens < judge.max_reason_chars + 16):
        problems.append(f"judge.sampling.max_tokens: {judge.sampling.max_tokens} cannot hold a "
                        f"reason of judge.max_reason_chars={judge.max_reason_chars} plus the score "
                        f"line; set it to at least {judge.max_reason_chars + 16}")
    return problems


def _tracking_problems(cfg: ExperimentConfig) -> list[str]:
    problems: list[str] = []
    if cfg.tracking.backend == "mlflow" and cfg.tracking.uri is None and is_uri(cfg.run.dir):
        # the default store is a file of the driver's local mirror: Train workers on other
        # nodes would write their own copies, and the bucket gets a database mid-write
        problems.append("tracking.uri: a run in a bucket needs an MLflow server "
                        "(tracking.uri: http://host:5000) that every node reaches")
    if (cfg.tracking.backend == "wandb" and cfg.tracking.wandb_mode == "offline"
            and is_uri(cfg.run.dir)):
        problems.append("tracking.wandb_mode: offline runs are files on each node's disk; a "
                        "run in a bucket needs wandb_mode: online")
    return problems


def gpu_type_problems(cfg: ExperimentConfig) -> list[str]:
    """Every GPU type the config names is one of resources.gpu_types."""
    known = cfg.resources.gpu_types
    named = [("resources.accelerator_type", cfg.resources.accelerator_type)]
    named += [(f"sources.{i}.accelerator_type", s.accelerator_type)
              for i, s in enumerate(cfg.sources)]
    for i, t in enumerate(cfg.targets):
        named += [(f"targets.{i}.accelerator_type", t.accelerator_type),
                  (f"targets.{i}.engine.accelerator_type", t.engine.accelerator_type)]
    named.append(("judge.accelerator_type", cfg.judge.accelerator_type))
    return [f"{key}: unknown GPU type {v!r}; resources.gpu_types has {sorted(known)}"
            for key, v in named if v is not None and v not in known]
