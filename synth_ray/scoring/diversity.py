"""Diversity (PAPER.md, Evaluation 3): Self-BLEU-3 (individual, aggregated, document-level)
and semantic diversity of each condition's outputs, one Ray task per (target, condition)
(`metrics/lexical.py: diversity_metrics`); with `self_bleu.draw: eligible` or `semantic:
authors`, the measures as the authors' notebooks draw them, one stream per bracket and
seed. Here: the streams started and merged into the per-condition rows, the individual
items, the sampled semantic distances and their tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig
from synth_ray.design import HUMAN as HUMAN_DATA
from synth_ray.design import VANILLA, adapter_name
from synth_ray.metrics.stats import compare_family
from synth_ray.scoring.perplexity import HUMAN_REFERENCE, pooled_by_condition


def stream_order(cfg: ExperimentConfig, present: set[str]
                 ) -> dict[tuple[str, int], list[str]]:
    """(bracket, training seed) -> the adapters of one notebook stream in its order: the
    bracket's single and multi adapter of that seed, the human adapter of that seed, the
    vanilla target; only those in `present`."""
    out = {}
    for bracket in cfg.brackets():
        for seed in cfg.training.seeds:
            names = [adapter_name(cfg, f"{kind}-{bracket}", seed) for kind in ("single", "multi")]
            names += [adapter_name(cfg, HUMAN_DATA, seed), VANILLA]
            out[(bracket, seed)] = [n for n in names if n in present]
    return out


def notebook_draws(cfg: ExperimentConfig) -> bool:
    """Whether any diversity measure is drawn as the authors' notebooks draw it."""
    ev = cfg.evaluation
    return ev.self_bleu.draw == "eligible" or ev.semantic == "authors"


def submit_streams(cfg: ExperimentConfig, texts: dict[str, list[str]]) -> dict[tuple, Any]:
    """`self_bleu.draw: eligible` and `semantic: authors`: the measures as the authors'
    notebooks draw them, one Ray task per bracket and seed (metrics/lexical.py), started
    beside the per-condition tasks while the engine scores; `merge_streams` reads them."""
    import ray

    from synth_ray.metrics.lexical import notebook_stream

    task = ray.remote(num_cpus=1)(notebook_stream)
    ev = cfg.evaluation.model_dump(mode="json")
    return {key: task.remote({n: texts[n] for n in names}, ev)
            for key, names in stream_order(cfg, set(texts)).items() if names}


def merge_streams(results: dict[tuple[str, int], dict[str, dict]],
                  done: dict[str, dict[str, Any]]) -> tuple[dict, list[dict], list[dict]]:
    """Each stream's lexical values into `done`'s rows (the first stream that drew an
    adapter wins: single and multi are in one, human and vanilla in every bracket's),
    the values per bracket (vanilla, in every seed's stream of a bracket: the first
    seed's), the individual items and the sampled semantic distances, once per adapter
    and bracket."""
    by_bracket: dict[str, dict[str, dict]] = {}
    items, distances, seen = [], [], set()
    for (bracket, _), streamed in results.items():
        for name, lex in streamed.items():
            mine = by_bracket.setdefault(bracket, {})
            if name in mine:  # vanilla, in every seed's stream: the first seed's draw
                continue
            items += [{"condition": name, "bracket": bracket, "self_bleu": x}
                      for x in lex.pop("individual_items", [])]
            distances += [{"condition": name, "bracket": bracket, "distance": x}
                          for x in lex.pop("semantic_distances", [])]
            mine[name] = lex
            if name not in seen:
                seen.add(name)
                done[name].update(lex)
    return by_bracket, items, distances


def semantic_tests(cfg: ExperimentConfig, distances: pl.DataFrame) -> dict[str, Any]:
    """`semantic: authors`: per bracket, its family's tests (Levene, Kruskal-Wallis, pairwise
    Mann-Whitney with Bonferroni) on each condition's sampled distances, seeds pooled."""
    out = {}
    for bracket in cfg.brackets():
        mine = distances.filter(pl.col("bracket") == bracket)
        groups = {n: mine.filter(pl.col("condition") == n)["distance"].to_list()
                  for n in set(mine["condition"])}
        out[bracket] = compare_family(pooled_by_condition(cfg, groups), [
            VANILLA, f"single-{bracket}", f"multi-{bracket}", HUMAN_DATA])
    return out


@dataclass
class Diversity:
    """A target's diversity: one row per condition, the individual Self-BLEU items, the
    notebooks' values per bracket (None without notebook draws) and sampled distances."""

    rows: pl.DataFrame
    items: pl.DataFrame
    by_bracket: dict[str, dict[str, dict]] | None
    distances: pl.DataFrame


def diversity_of(cfg: ExperimentConfig, target: str, done: dict[str, dict[str, Any]],
                 streams: dict[tuple[str, int], dict[str, dict]] | None) -> Diversity:
    """The per-condition tasks' results (`done`) and the notebook streams' (`streams`, None
    when nothing is drawn as the notebooks do) as the target's diversity tables."""
    # each response's own Self-BLEU (the individual form's items): the report's test
    rows_of_items = [{"condition": c, "bracket": None, "self_bleu": x}
                     for c, d in done.items() for x in d.pop("individual_items")]
    by_bracket = None
    distance_rows: list[dict] = []
    if streams is not None:  # each adapter's row: the first stream that drew it
        by_bracket, streamed, distance_rows = merge_streams(
            streams, {c: d for c, d in done.items() if c != HUMAN_REFERENCE})
        if cfg.evaluation.self_bleu.draw == "eligible":  # the streams' lexical items
            rows_of_items = ([r for r in rows_of_items if r["condition"] == HUMAN_REFERENCE]
                             + streamed)
    items = pl.DataFrame(rows_of_items, schema={"condition": pl.Utf8, "bracket": pl.Utf8,
                                                "self_bleu": pl.Float64})
    rows = pl.DataFrame([{"target": target, "condition": c, **d} for c, d in done.items()])
    distances = pl.DataFrame(distance_rows, schema={
        "condition": pl.Utf8, "bracket": pl.Utf8, "distance": pl.Float64})
    return Diversity(rows, items, by_bracket, distances)
