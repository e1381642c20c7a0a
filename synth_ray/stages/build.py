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
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import polars as pl

from synth_ray.config import SelfBleuSection
from synth_ray.data.dolly import validation_mask
from synth_ray.design import (
    DATASETS_SUMMARY,
    PROBE_SET,
    SOURCE_INDEPENDENCE,
    SOURCE_OVERLAP,
    condition_names,
    dataset_path,
    generation_path,
    part_path,
    part_sources,
    probe_path,
)
from synth_ray.engines.store import STATUS_OK
from synth_ray.metrics.self_bleu import aggregated_self_bleu, individual_self_bleu
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import atomic_write_text, hash_file, write_parquet

COLUMNS = ["id", "part", "instruction", "context", "response", "source", "condition", "bracket",
           "split"]  # fmt: skip
def _parts(ctx: Context) -> pl.DataFrame:
    frames = [pl.read_parquet(ctx.run.path(part_path(k)))
              for k in range(1, ctx.cfg.split.num_parts + 1)]
    return pl.concat(frames).select("id", "part", "instruction", "context", "response")


def build_condition(
    ctx: Context, condition: str, parts: pl.DataFrame, val_ids: set[str]
) -> tuple[pl.DataFrame, dict[str, int]]:
    if condition == "human":
        rows = parts.with_columns(source=pl.lit("human"), bracket=pl.lit(None, pl.Utf8))
        excluded: dict[str, int] = {}
    else:
        frames, excluded = [], {}
        dropped = pl.col("status").is_in(sorted(set(ctx.cfg.conditions.exclude) | {"error"}))
        for k, src in part_sources(ctx.cfg, condition).items():
            gen = pl.read_parquet(ctx.run.path(generation_path(src)))
            gen = gen.filter(pl.col("part") == k)
            for status, n in gen.filter(dropped).group_by("status").len().iter_rows():
                excluded[status] = excluded.get(status, 0) + n
            frames.append(gen.filter(~dropped)
                          .select("id", "part", "source", "bracket", "response"))
        answers = pl.concat(frames)
        rows = parts.drop("response").join(answers, on=["id", "part"], how="inner")
    rows = rows.with_columns(
        condition=pl.lit(condition),
        split=pl.when(pl.col("id").is_in(list(val_ids))).then(pl.lit("validation"))
        .otherwise(pl.lit("train")),
    ).select(COLUMNS).sort(["part", "id"])
    return rows, excluded


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def ngram_set(texts: list[str], n: int = 3) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for t in texts:
        w = _words(t)
        out.update(zip(*(w[i:] for i in range(n))))
    return out


def source_overlap(ctx: Context) -> pl.DataFrame:
    """Pairwise Jaccard overlap of word-trigram sets between the sources of each bracket:
    does a second source really add n-grams the first one lacks?"""
    rows = []
    for bracket, members in ctx.cfg.brackets().items():
        sets = {}
        for s in members:
            p = ctx.run.path(generation_path(s.name))
            if p.exists():
                gen = pl.read_parquet(p).filter(pl.col("status") == STATUS_OK)
                sets[s.name] = ngram_set(gen["response"].to_list())
        for a, b in itertools.combinations(sorted(sets), 2):
            union = len(sets[a] | sets[b])
            rows.append({"bracket": bracket, "source_a": a, "source_b": b,
                         "jaccard_trigrams": len(sets[a] & sets[b]) / union if union else 0.0})
    return pl.DataFrame(rows, schema={"bracket": pl.Utf8, "source_a": pl.Utf8,
                                      "source_b": pl.Utf8, "jaccard_trigrams": pl.Float64})


def source_independence(ctx: Context) -> pl.DataFrame | None:
    """Per bracket, every pair of its sources (and the human answers) on the shared probe
    set (`generation.probe_prompts`; `metrics/independence.py`). None when there is none."""
    if not ctx.cfg.generation.probe_prompts or not ctx.run.path(PROBE_SET).exists():
        return None
    from synth_ray.metrics.diversity import embed
    from synth_ray.metrics.independence import pairwise

    probe = pl.read_parquet(ctx.run.path(PROBE_SET))
    human = dict(zip(probe["id"], probe["response"], strict=True))
    model = ctx.cfg.evaluation.embedding_model

    rows = []
    for bracket, members in ctx.cfg.brackets().items():
        answers = {"human": human}
        for s in members:
            p = ctx.run.path(probe_path(s.name))
            if p.exists():
                got = pl.read_parquet(p).filter(pl.col("status").is_in([STATUS_OK, "truncated"]))
                answers[s.name] = dict(zip(got["id"], got["response"], strict=True))
        rows += [{"bracket": bracket, **r}
                 for r in pairwise(answers, lambda texts: embed(texts, model))]
    return pl.DataFrame(rows, schema={
        "bracket": pl.Utf8, "source_a": pl.Utf8, "source_b": pl.Utf8, "prompts": pl.Int64,
        "cross_bleu": pl.Float64, "embedding_cosine": pl.Float64,
        "vocabulary_jaccard": pl.Float64})


def describe(rows: pl.DataFrame, excluded: dict[str, int], sb: SelfBleuSection) -> dict[str, Any]:
    words = rows["response"].map_elements(lambda t: len(t.split()), return_dtype=pl.Int64)
    texts = rows["response"].to_list()
    individual, _ = individual_self_bleu(texts, sb.individual_samples, sb.seed,
                                         sb.min_sentence_words, sb.max_order, sb.sentences, sb.draw)
    aggregated, _ = aggregated_self_bleu(texts, sb.aggregated_samples, sb.seed,
                                         sb.min_sentence_words, sb.max_order, sb.sentences, sb.draw)
    return {
        "self_bleu_individual": individual,
        "self_bleu_aggregated": aggregated,
        "rows": rows.height,
        "train": int((rows["split"] == "train").sum()),
        "validation": int((rows["split"] == "validation").sum()),
        "excluded": excluded,
        "sources": sorted(set(rows["source"].to_list())),
        "response_words": {
            "mean": round(float(words.mean() or 0), 2),
            "median": float(words.median() or 0),
            "p90": float(words.quantile(0.9) or 0),
            "max": int(words.max() or 0),
        },
    }


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
        df, excluded = build_condition(ctx, name, parts, val_ids)
        path = dataset_path(name)
        write_parquet(df, ctx.run.path(path))
        outputs.append(path)
        rows[name] = df.height
        summary[name] = describe(df, excluded, ctx.cfg.evaluation.self_bleu)
    overlap = source_overlap(ctx)
    write_parquet(overlap, ctx.run.path(SOURCE_OVERLAP))
    summary_doc = {"conditions": summary, "source_overlap": overlap.to_dicts()}
    independence = source_independence(ctx)
    if independence is not None:
        write_parquet(independence, ctx.run.path(SOURCE_INDEPENDENCE))
        outputs.append(SOURCE_INDEPENDENCE)
        summary_doc["source_independence"] = independence.to_dicts()
    atomic_write_text(ctx.run.path(DATASETS_SUMMARY), json.dumps(summary_doc, indent=2) + "\n")
    outputs += [SOURCE_OVERLAP, DATASETS_SUMMARY]
    brief = ", ".join(f"{n} {r}" for n, r in rows.items())
    return StageOutput(outputs, rows, f"training sets: {brief}", {"conditions": summary})
