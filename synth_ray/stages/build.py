"""Stage `build`: the training set of every condition (PAPER.md, Conditions).

- human: Dolly's own responses for the parts' instructions.
- single-<bracket>: the bracket's single source (its Llama) answers every part.
- multi-<bracket>: part k is answered by the k-th source listed for the bracket.

`datasets/summary.json` describes each training set: rows, exclusions, response lengths,
Self-BLEU-3 of the responses (individual and aggregated), and the n-gram overlap between the
sources of a bracket.

Generated rows that are not `ok` (empty, cut off by max_tokens, failed) are left out and
counted per reason. A seeded `split.validation_fraction` of the instruction ids is held out
for validation, the same ids in every condition so validation losses compare.
The sets are assembled and described by `synth_ray/data/conditions.py`; the n-gram maths
is `metrics/overlap.py`'s.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from synth_ray.data.conditions import (
    build_condition,
    describe,
    source_independence,
    source_overlap,
)
from synth_ray.data.dolly import validation_mask
from synth_ray.design import (
    DATASETS_SUMMARY,
    SOURCE_INDEPENDENCE,
    SOURCE_OVERLAP,
    condition_names,
    dataset_path,
    generation_path,
    part_path,
    part_sources,
    probe_path,
)
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import atomic_write_text, hash_file, write_parquet


def _parts(ctx: Context) -> pl.DataFrame:
    frames = [pl.read_parquet(ctx.run.path(part_path(k)))
              for k in range(1, ctx.cfg.split.num_parts + 1)]
    return pl.concat(frames).select("id", "part", "instruction", "context", "response")


def inputs(ctx: Context) -> dict[str, Any]:
    gens = sorted({s for c in condition_names(ctx.cfg) if c != "human"
                   for s in part_sources(ctx.cfg, c).values()})
    return {
        "parts": [hash_file(ctx.run.path(part_path(k)))
                  for k in range(1, ctx.cfg.split.num_parts + 1)],
        "generations": {s: hash_file(ctx.run.path(generation_path(s))) for s in gens},
        "conditions": ctx.cfg.conditions.model_dump(),
        "validation_fraction": ctx.cfg.split.validation_fraction,
        # ceil(n x fraction) rows as `datasets` holds out (was: rounded): the rows change
        "validation_rows": "ceil",
        "seed": ctx.cfg.split.seed,
        # the training sets' Self-BLEU in datasets_summary.json: a changed setting redoes
        # the summary (seconds); the datasets come out byte-identical, so nothing retrains
        "self_bleu": ctx.cfg.evaluation.self_bleu.hashed(),
        **({"probe": {s.name: hash_file(ctx.run.path(probe_path(s.name)))
                      for s in ctx.cfg.sources if ctx.run.path(probe_path(s.name)).exists()},
            "embedding_model": ctx.cfg.evaluation.embedding_model}
           if ctx.cfg.generation.probe_prompts else {}),
    }


def run(ctx: Context) -> StageOutput:
    parts = _parts(ctx)
    ids = parts["id"].to_list()
    mask = validation_mask(ids, ctx.cfg.split.validation_fraction, ctx.cfg.split.seed)
    val_ids = {i for i, m in zip(ids, mask) if m}
    outputs, rows, summary = [], {}, {}
    for name in condition_names(ctx.cfg):
        df, excluded = build_condition(ctx.cfg, ctx.run, name, parts, val_ids)
        path = dataset_path(name)
        write_parquet(df, ctx.run.path(path))
        outputs.append(path)
        rows[name] = df.height
        summary[name] = describe(df, excluded, ctx.cfg.evaluation.self_bleu)
    overlap = source_overlap(ctx.cfg, ctx.run)
    write_parquet(overlap, ctx.run.path(SOURCE_OVERLAP))
    summary_doc = {"conditions": summary, "source_overlap": overlap.to_dicts()}
    independence = source_independence(ctx.cfg, ctx.run)
    if independence is not None:
        write_parquet(independence, ctx.run.path(SOURCE_INDEPENDENCE))
        outputs.append(SOURCE_INDEPENDENCE)
        summary_doc["source_independence"] = independence.to_dicts()
    atomic_write_text(ctx.run.path(DATASETS_SUMMARY), json.dumps(summary_doc, indent=2) + "\n")
    outputs += [SOURCE_OVERLAP, DATASETS_SUMMARY]
    brief = ", ".join(f"{n} {r}" for n, r in rows.items())
    return StageOutput(outputs, rows, f"training sets: {brief}", {"conditions": summary})
