"""The training set of every condition (PAPER.md, Conditions), from the run's parts and the
sources' generations, and what `datasets/summary.json` says of each: rows, exclusions,
response lengths, Self-BLEU-3 of the responses (individual and aggregated); besides, how
alike the sources of a bracket are (n-gram overlap on their parts, `metrics/overlap.py`;
independence on the shared probe set, `metrics/independence.py`).

- human: Dolly's own responses for the parts' instructions.
- single-<bracket>: the bracket's single source (its Llama) answers every part.
- multi-<bracket>: part k is answered by the k-th source listed for the bracket.

Generated rows whose status the config excludes (and failed ones) are left out and counted
per reason.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig, SelfBleuSection
from synth_ray.design import PROBE_SET, generation_path, part_sources, probe_path
from synth_ray.engines.store import STATUS_OK
from synth_ray.metrics.overlap import jaccard_pairs, ngram_set
from synth_ray.metrics.self_bleu import aggregated_self_bleu, individual_self_bleu
from synth_ray.runtime.rundir import RunDir

COLUMNS = ["id", "part", "instruction", "context", "response", "source", "condition", "bracket",
           "split"]  # fmt: skip


def build_condition(
    cfg: ExperimentConfig, run: RunDir, condition: str, parts: pl.DataFrame, val_ids: set[str]
) -> tuple[pl.DataFrame, dict[str, int]]:
    if condition == "human":
        rows = parts.with_columns(source=pl.lit("human"), bracket=pl.lit(None, pl.Utf8))
        excluded: dict[str, int] = {}
    else:
        frames, excluded = [], {}
        dropped = pl.col("status").is_in(sorted(set(cfg.conditions.exclude) | {"error"}))
        for k, src in part_sources(cfg, condition).items():
            gen = pl.read_parquet(run.path(generation_path(src)))
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


def source_overlap(cfg: ExperimentConfig, run: RunDir) -> pl.DataFrame:
    """Pairwise Jaccard overlap of word-trigram sets between the sources of each bracket:
    does a second source really add n-grams the first one lacks?"""
    rows = []
    for bracket, members in cfg.brackets().items():
        sets = {}
        for s in members:
            p = run.path(generation_path(s.name))
            if p.exists():
                gen = pl.read_parquet(p).filter(pl.col("status") == STATUS_OK)
                sets[s.name] = ngram_set(gen["response"].to_list())
        rows += [{"bracket": bracket, "source_a": a, "source_b": b, "jaccard_trigrams": j}
                 for a, b, j in jaccard_pairs(sets)]
    return pl.DataFrame(rows, schema={"bracket": pl.Utf8, "source_a": pl.Utf8,
                                      "source_b": pl.Utf8, "jaccard_trigrams": pl.Float64})


def source_independence(cfg: ExperimentConfig, run: RunDir) -> pl.DataFrame | None:
    """Per bracket, every pair of its sources (and the human answers) on the shared probe
    set (`generation.probe_prompts`; `metrics/independence.py`). None when there is none."""
    if not cfg.generation.probe_prompts or not run.path(PROBE_SET).exists():
        return None
    from synth_ray.metrics.diversity import embed
    from synth_ray.metrics.independence import pairwise

    probe = pl.read_parquet(run.path(PROBE_SET))
    human = dict(zip(probe["id"], probe["response"], strict=True))
    model = cfg.evaluation.embedding_model

    rows = []
    for bracket, members in cfg.brackets().items():
        answers = {"human": human}
        for s in members:
            p = run.path(probe_path(s.name))
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
