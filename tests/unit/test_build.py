"""The build stage (stages/build.py, data/conditions.py): training sets per condition from the
right sources and parts, the n-gram overlap maths (metrics/overlap.py), and the Self-BLEU
settings as build inputs."""

from __future__ import annotations

import time

import polars as pl
import pytest
import yaml

from synth_ray.config import validate_config
from synth_ray.design import part_path
from synth_ray.engines.store import GEN_SCHEMA
from synth_ray.runtime.pipeline import Context
from synth_ray.runtime.rundir import RunDir, write_parquet
from synth_ray.stages import build as conditions


def make_run(tmp_path, demo_config_path, n_per_part: int = 20) -> Context:
    data = yaml.safe_load(demo_config_path.read_text())
    data["run"]["dir"] = str(tmp_path)
    data["conditions"].pop("exclude")  # the paper's rule: truncated answers are left out
    cfg = validate_config(data)
    run = RunDir(tmp_path)
    parts = {}
    for k in range(1, 5):
        parts[k] = pl.DataFrame({
            "id": [f"p{k}-{i}" for i in range(n_per_part)],
            "instruction": [f"instr {k} {i}" for i in range(n_per_part)],
            "context": [""] * n_per_part,
            "response": [f"human answer {k} {i}" for i in range(n_per_part)],
            "category": ["open_qa"] * n_per_part, "line": list(range(n_per_part)),
        }).with_columns(pl.lit(k, pl.Int32).alias("part"))  # fmt: skip
        write_parquet(parts[k], run.path(part_path(k)))
    for src, ks in {"small-a": [1, 2, 3, 4], "small-b": [2], "small-c": [3],
                    "small-d": [4]}.items():
        frames = []
        for k in ks:
            p = parts[k]
            status = ["truncated" if (i == 0 and src == "small-b") else "ok"
                      for i in range(p.height)]
            frames.append(pl.DataFrame({
                "id": p["id"], "part": [k] * p.height, "gen_key": p["id"] + src,
                "source": [src] * p.height, "bracket": ["small"] * p.height,
                "backend": ["vllm"] * p.height, "model_id": [f"tiny://{src}"] * p.height,
                "revision": [None] * p.height, "sampling": ["{}"] * p.height,
                "messages": ["[]"] * p.height,
                "response": [f"{src} says {i} about part {k}" for i in range(p.height)],
                "prompt_tokens": [1] * p.height, "completion_tokens": [1] * p.height,
                "finish_reason": ["stop"] * p.height, "latency_s": [0.1] * p.height,
                "error": [""] * p.height, "status": status,
                "attempt_time": [time.time()] * p.height,
            }, schema=GEN_SCHEMA))  # fmt: skip
        write_parquet(pl.concat(frames), run.path("generations", f"{src}.parquet"))
    return Context(cfg, run)


def test_conditions_have_right_rows_from_right_sources(tmp_path, demo_config_path) -> None:
    ctx = make_run(tmp_path, demo_config_path)
    out = conditions.run(ctx)
    assert out.rows == {"human": 80, "single-small": 80, "multi-small": 79}
    human = pl.read_parquet(tmp_path / "datasets" / "human.parquet")
    assert human["response"][0].startswith("human answer") and set(human["source"]) == {"human"}
    single = pl.read_parquet(tmp_path / "datasets" / "single-small.parquet")
    assert set(single["source"]) == {"small-a"}
    multi = pl.read_parquet(tmp_path / "datasets" / "multi-small.parquet")
    by_part = dict(multi.group_by("part").agg(pl.col("source").unique()).iter_rows())
    assert {k: v for k, v in by_part.items()} == {
        1: ["small-a"], 2: ["small-b"], 3: ["small-c"], 4: ["small-d"]}
    for row in multi.iter_rows(named=True):  # the answer belongs to the row's instruction
        assert row["response"].endswith(f"about part {row['part']}")
        assert row["response"].startswith(row["source"])
    assert out.extra["conditions"]["multi-small"]["excluded"] == {"truncated": 1}
    # Self-BLEU of the training responses, against the naive definition
    import random

    from synth_ray.metrics.self_bleu import naive_self_bleu, split_sentences

    texts = single["response"].to_list()
    pool = random.Random(42).sample(texts, min(ctx.cfg.evaluation.self_bleu.aggregated_samples,
                                               len(texts)))
    sents = [s for t in pool for s in split_sentences(t)]
    assert out.extra["conditions"]["single-small"]["self_bleu_aggregated"] == pytest.approx(
        naive_self_bleu(sents), abs=1e-9)
    # validation ids: 5% of 80 = 4, the same instructions in every condition
    vals = [set(pl.read_parquet(tmp_path / "datasets" / f"{c}.parquet")
                .filter(pl.col("split") == "validation")["id"]) for c in
            ("human", "single-small")]
    assert len(vals[0]) == 4 and vals[0] == vals[1]
    overlap = pl.read_parquet(tmp_path / "datasets" / "source_overlap.parquet")
    assert overlap.height == 6 and overlap["jaccard_trigrams"].is_between(0, 1).all()


def test_ngram_jaccard_against_hand_count() -> None:
    from synth_ray.metrics.overlap import ngram_set

    a = ngram_set(["the cat sat on the mat"])
    b = ngram_set(["the cat sat on a mat"])
    # a: the cat sat / cat sat on / sat on the / on the mat ; b shares the first two
    assert len(a) == 4 and len(a & b) == 2 and len(a | b) == 6


def test_the_summary_self_bleu_settings_are_build_inputs(tmp_path, demo_config_path) -> None:
    """datasets_summary.json holds the training sets' Self-BLEU: a run that changes how it is
    measured must redo build, not keep the old figures."""
    ctx = make_run(tmp_path, demo_config_path)
    punkt = ctx.cfg.model_copy(update={"evaluation": ctx.cfg.evaluation.model_copy(update={
        "self_bleu": ctx.cfg.evaluation.self_bleu.model_copy(update={"sentences": "punkt"})})})
    assert punkt.evaluation.self_bleu.sentences != ctx.cfg.evaluation.self_bleu.sentences
    assert conditions.inputs(ctx) != conditions.inputs(Context(punkt, ctx.run))
