"""Stage `respond`: every adapter of a target, and the vanilla target, answer the held-out
test instructions and the safety prompts (RB and RB+J, `prompt_sets`) from ONE vLLM engine
per target (per-row LoRA through ray.data.llm; the vanilla target as an all-zero adapter,
`engines/adapters.py`). Same rows, provenance, shards, resume and error rules as generation
(`engines/answering.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig, TargetSection
from synth_ray.data.prompt_sets import (
    authors_safety_set,
    load_authors_templates,
    load_jailbreak_templates,
    load_safety_prompts,
    safety_set,
    source_hash,
)
from synth_ray.design import (
    SAFETY_REJECTS,
    SAFETY_SET,
    TEST_PATH,
    adapter_dir,
    adapter_grid,
    responses_path,
)
from synth_ray.engines.adapters import adapters_of, lora_engine
from synth_ray.engines.answering import EngineWindow, answer_many
from synth_ray.engines.layout import EngineRun, engine_record
from synth_ray.engines.processors import vllm_processor
from synth_ray.engines.store import REQUEST_SCHEMA, GenerationStore, request_row
from synth_ray.prompts import chat_messages
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import hash_file, write_parquet
from synth_ray.train.lora import ADAPTER_FILE

log = logging.getLogger("synth_ray")


def build_requests(cfg: ExperimentConfig, target: TargetSection, adapters: dict[str, Path],
                   prompts: pl.DataFrame) -> pl.DataFrame:
    """Every adapter x every prompt (columns id, instruction, context)."""
    sampling = cfg.evaluation.sampling.model_dump()
    rows = []
    for name, path in adapters.items():
        weights = hash_file(path / ADAPTER_FILE)  # a retrained adapter answers again
        for r in prompts.iter_rows(named=True):
            msgs = chat_messages(r["instruction"], r["context"], cfg.generation.system_prompt)
            row = request_row(r["id"], 0, source=name, key_model=f"{target.model}+lora:{weights}",
                              model_id=target.model, revision=target.revision, bracket=None,
                              backend="vllm", sampling=sampling, messages=msgs)
            rows.append({**row, "lora_path": str(path.resolve())})
    return pl.DataFrame(rows, schema={**REQUEST_SCHEMA, "lora_path": pl.Utf8})


def safety_items(ctx: Context) -> pl.DataFrame:
    """The RB and RB+J prompts, written with their provenance (and the rows quarantined)."""
    judge = ctx.cfg.judge
    repeats = judge.safety_rows == "authors"  # blank and repeated rows kept, as theirs
    prompts, rejects = load_safety_prompts(judge.safety_prompts, judge.max_safety_prompts, repeats)
    if judge.jailbreak_design == "authors":
        templates, t_rejects = load_authors_templates(judge.jailbreak_templates,
                                                      judge.jailbreak_min_votes, repeats)
        items = authors_safety_set(prompts, templates, judge.jailbreak_prompts_per_category,
                                   judge.seed)
        rejects = pl.concat([rejects, t_rejects])
    else:
        templates = pl.DataFrame(schema={"id": pl.Utf8, "template": pl.Utf8})
        if judge.jailbreaks_per_prompt:
            templates, t_rejects = load_jailbreak_templates(judge.jailbreak_templates)
            rejects = pl.concat([rejects, t_rejects])
        items = safety_set(prompts, templates, judge.jailbreaks_per_prompt, judge.seed)
    write_parquet(items, ctx.run.path(SAFETY_SET))
    write_parquet(rejects, ctx.run.path(SAFETY_REJECTS))
    if rejects.height:
        log.warning("[respond] %d safety prompt/template row(s) quarantined in %s",
                    rejects.height, SAFETY_REJECTS)
    return items


def inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    adapters = {}
    for t in cfg.targets:
        for _, _, name in adapter_grid(cfg):
            f = ctx.run.path(adapter_dir(t.name, name), ADAPTER_FILE)
            adapters[f"{t.name}/{name}"] = hash_file(f) if f.exists() else None
    judge = cfg.judge
    return {"test": hash_file(ctx.run.path(TEST_PATH)), "adapters": adapters,
            "safety": {"prompts": source_hash(judge.safety_prompts),
                       "templates": source_hash(judge.jailbreak_templates),
                       "per_prompt": judge.jailbreaks_per_prompt, "seed": judge.seed,
                       "limit": judge.max_safety_prompts,
                       # the authors' design only where chosen: old runs keep their hash
                       **({"design": "authors", "min_votes": judge.jailbreak_min_votes,
                           "per_category": judge.jailbreak_prompts_per_category}
                          if judge.jailbreak_design == "authors" else {}),
                       **({"rows": "authors"} if judge.safety_rows == "authors" else {})},
            "sampling": cfg.evaluation.sampling.model_dump(), "lora": cfg.lora.model_dump(),
            "system_prompt": cfg.generation.system_prompt,
            "targets": [t.hashed() for t in cfg.targets]}


def run(ctx: Context) -> StageOutput:
    from synth_ray.runtime.cluster import check_resources, ensure_ray

    cfg = ctx.cfg
    test = pl.read_parquet(ctx.run.path(TEST_PATH))
    safety = safety_items(ctx).select(id="item_id", instruction="text", context=pl.lit(""))
    ensure_ray(cfg.resources)
    check_resources(cfg, "respond")
    outputs, rows, summaries, engines = [], {}, {}, []
    for target in cfg.targets:
        adapters = adapters_of(ctx, target)
        folder = ctx.run.path(responses_path(target.name)).parent
        jobs = [(build_requests(cfg, target, adapters, test), GenerationStore(folder, "test")),
                (build_requests(cfg, target, adapters, safety), GenerationStore(folder, "safety"))]
        spec = lora_engine(ctx, target, len(adapters))
        engines.append(engine_record(EngineRun.of(cfg), spec))
        _, summary = answer_many(
            ctx, "respond", f"target {target.name!r} ({len(adapters)} adapters)", jobs,
            lambda spec=spec: vllm_processor(EngineRun.of(cfg), spec, cfg.evaluation.sampling),
            EngineWindow.of(cfg.generation, spec))
        outputs += [responses_path(target.name), responses_path(target.name, "safety")]
        rows[target.name] = summary["rows"]
        summaries[target.name] = summary
    outputs += [SAFETY_SET, SAFETY_REJECTS]
    return StageOutput(outputs, rows, f"{sum(rows.values())} responses for "
                       f"{len(cfg.targets)} target(s)", {"targets": summaries, "engines": engines})
