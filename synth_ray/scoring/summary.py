"""A target's eval/<target>/summary.json: its perplexity tables and diversity rows, with the
notebooks' values per bracket and the semantic tests where they were drawn."""

from __future__ import annotations

from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig
from synth_ray.scoring.diversity import Diversity, semantic_tests
from synth_ray.scoring.perplexity import perplexity_tables


def summary_tables(cfg: ExperimentConfig, scores: pl.DataFrame,
                   diversity: Diversity) -> dict[str, Any]:
    tables = {"perplexity": perplexity_tables(scores, cfg),
              "diversity": diversity.rows.to_dicts()}
    if diversity.by_bracket is not None:  # the notebooks' draws: human and vanilla per bracket
        tables["by_bracket"] = diversity.by_bracket
    if diversity.distances.height:  # `semantic: authors`: the authors' tests on sampled distances
        tables["semantic_tests"] = semantic_tests(cfg, diversity.distances)
    return tables
