"""The score stage on CPU, on the grid's responses (conftest's `evaluated`): perplexity
through vLLM prompt log-probs equals transformers, with and without an adapter; the tests and
semantic diversity recomputed from the run's files with scipy and the embedding model; the
report reproduces the numbers, and the tracking server holds them."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from synth_ray.metrics.perplexity import hf_response_logprobs, perplexity, token_spans

from .helpers import grid_model, run_cli

pytestmark = pytest.mark.slow


def test_vllm_perplexity_equals_transformers(evaluated) -> None:
    """Tolerance: 1e-4 relative on perplexity (fp32 on both sides)."""
    _, run_dir = evaluated
    scores = pl.read_parquet(run_dir / "eval" / "tiny-target" / "perplexity.parquet")
    resp = pl.read_parquet(run_dir / "responses" / "tiny-target" / "test.parquet")
    test = pl.read_parquet(run_dir / "splits" / "test.parquet")
    assert (scores["error"] == "").all()
    assert set(scores.filter(pl.col("view") == "outputs")["condition"]) == {
        "vanilla", "human", "single-small", "multi-small", "human-reference"}
    from synth_ray.prompts import chat_messages

    checks = 0
    for view, condition, scorer in (("outputs", "single-small", None),
                                    ("human", "multi-small", "multi-small")):
        model, tok = grid_model(run_dir, scorer)
        for s in scores.filter((pl.col("view") == view) & (pl.col("condition") == condition)
                               ).head(3).iter_rows(named=True):
            if view == "outputs":
                r = resp.filter((pl.col("source") == condition) & (pl.col("id") == s["id"]))
                msgs, text = json.loads(r["messages"][0]), r["response"][0]
            else:
                r = test.filter(pl.col("id") == s["id"])
                msgs = chat_messages(r["instruction"][0], r["context"][0],
                                     "You are a helpful assistant.")
                text = r["response"][0]
            p, a = token_spans(tok, msgs, text)
            want = perplexity(hf_response_logprobs(model, p, a))
            assert s["n_tokens"] == len(a)
            assert math.isclose(s["perplexity"], want, rel_tol=1e-4), (view, s, want)
            checks += 1
    assert checks == 6
    summary = json.loads((run_dir / "eval" / "tiny-target" / "summary.json").read_text())
    # Kruskal-Wallis over the conditions, recomputed with scipy from the run's own scores
    from scipy import stats

    outputs = scores.filter((pl.col("view") == "outputs") & pl.col("perplexity").is_not_null())
    groups = [outputs.filter(pl.col("condition") == c)["perplexity"].to_list()
              for c in sorted(set(outputs["condition"]))]
    h, p = stats.kruskal(*groups)
    kruskal = summary["perplexity"]["outputs"]["tests"]["kruskal"]
    assert kruskal["H"] == pytest.approx(h, rel=1e-9) and kruskal["p"] == pytest.approx(p,
                                                                                    rel=1e-9)


def test_semantic_diversity_equals_the_embedding_models_own_distances(evaluated) -> None:
    """Semantic diversity = 1 - mean cosine similarity over pairs of the drawn responses:
    recomputed from the run's files with sentence-transformers' own model and scipy's
    pairwise cosine distances (the score stage uses its own closed form)."""
    import random

    from scipy.spatial.distance import pdist
    from sentence_transformers import SentenceTransformer

    from synth_ray.config import load_config
    from synth_ray.metrics.diversity import model_location

    cfg_path, run_dir = evaluated
    ev = load_config(cfg_path).evaluation
    div = pl.read_parquet(run_dir / "eval" / "tiny-target" / "diversity.parquet")
    assert set(div["condition"]) == {"vanilla", "human", "single-small", "multi-small",
                                     "human-reference"}
    resp = pl.read_parquet(run_dir / "responses" / "tiny-target" / "test.parquet")
    test = pl.read_parquet(run_dir / "splits" / "test.parquet")
    model = SentenceTransformer(model_location(ev.embedding_model), device="cpu")
    for condition in ("multi-small", "human-reference"):
        texts = (test["response"].to_list() if condition == "human-reference" else
                 resp.filter((pl.col("source") == condition)
                             & pl.col("status").is_in(["ok", "truncated"]))["response"].to_list())
        n = ev.self_bleu.aggregated_samples
        docs = random.Random(ev.self_bleu.seed).sample(texts, min(n, len(texts)))
        want = float(pdist(model.encode(docs), "cosine").mean())
        got = div.filter(pl.col("condition") == condition)["semantic_diversity"][0]
        assert got == pytest.approx(want, abs=1e-5), condition


def test_report_reproduces_the_run_numbers(evaluated) -> None:
    cfg, run_dir = evaluated
    proc = run_cli("report", str(cfg), f"run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    md = (run_dir / "report" / "tables.md").read_text()
    evaluation = md[md.index("## Evaluation"):]  # the claims table comes first, rounded
    summary = json.loads((run_dir / "eval" / "tiny-target" / "summary.json").read_text())
    for condition, s in summary["perplexity"]["outputs"]["summary"].items():
        row = next(line for line in evaluation.splitlines()
                   if line.startswith(f"| {condition} | "))
        assert f"{s['mean']:.4g}" in row and f"{s['median']:.4g}" in row
    for d in summary["diversity"]:
        assert f"{d['lexical_diversity_aggregated']:.4g}" in evaluation
    # the claims table: one seed here, so each condition's value is its adapter's
    claims = md[md.index("## Claims"):md.index("## Stages")]
    for d in summary["diversity"]:
        if d["condition"] in ("vanilla", "human", "single-small", "multi-small"):
            row = next(line for line in claims.splitlines()
                       if line.startswith(f"| {d['condition']} | "))
            assert f"| {d['lexical_diversity_aggregated']:.3g} |" in row
    assert "one rule, whatever the seeds" in claims
    # claim 1's perplexity check: scipy's Mann-Whitney U on the run's per-sample file, and
    # its statistic as the effect
    from scipy import stats

    scores = pl.read_parquet(run_dir / "eval" / "tiny-target" / "perplexity.parquet").filter(
        (pl.col("view") == "outputs") & pl.col("perplexity").is_not_null())
    x = {c: scores.filter(pl.col("condition") == c)["perplexity"].to_list()
         for c in ("multi-small", "single-small")}
    mw = stats.mannwhitneyu(x["multi-small"], x["single-small"], alternative="two-sided")
    line = next(r for r in claims.splitlines()
                if r.startswith("| perplexity of outputs, multi > single |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:4] == ["Mann-Whitney U, Bonferroni/6", f"{min(1.0, 6 * mw.pvalue):.3g}"]
    a = mw.statistic / (len(x["multi-small"]) * len(x["single-small"]))
    assert cells[4].startswith(f"A = P(a > b) {a:.3g} [")
    # the individual form's items: one per scored response, their mean the summary's
    items = pl.read_parquet(run_dir / "eval" / "tiny-target" / "self_bleu_individual.parquet")
    for d in summary["diversity"]:
        mine = items.filter(pl.col("condition") == d["condition"])["self_bleu"]
        assert mine.len() == d["individual_responses"], d["condition"]
        if mine.len():
            assert mine.mean() == pytest.approx(d["self_bleu_individual"], rel=1e-12)
    if not (run_dir / "judge" / "tiny-target" / "danger_zone.parquet").exists():
        assert "_Not judged yet._" in md  # says what is missing, shows no numbers
    page = (run_dir / "report" / "index.html").read_text()
    assert page.count("<table class=\"sortable\">") == md.count("\n|---")
    assert "alt=\"perplexity_tiny-target.png\"" in page and "data:image/png;base64," in page
    png = (run_dir / "report" / "plots" / "perplexity_tiny-target.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_tracking_server_holds_the_run_its_adapters_and_evaluation(evaluated) -> None:
    """The grid's stages logged to a real MLflow server (conftest's mlflow_server): one run
    for the pipeline (train, respond and score continued it), one child per adapter with
    the loss its worker saw, the score tables as metrics, the report as an artifact."""
    from mlflow import MlflowClient

    from synth_ray.config import load_config

    cfg_path, run_dir = evaluated
    proc = run_cli("report", str(cfg_path), f"run.dir={run_dir}", "--force")
    assert proc.returncode == 0, proc.stderr[-6000:]
    cfg = load_config(cfg_path)
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name("grid")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    # this run directory's (other tests run the grid's config elsewhere: runs of their own)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags
               and r.data.tags.get("synth_ray.run") == str(run_dir.resolve())]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["training.learning_rate"] == str(cfg.training.learning_rate)
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {f"tiny-target--{c}" for c in ("human", "single-small",
                                                            "multi-small")}
    for name, child in children.items():
        summary = json.loads((run_dir / "adapters" / "tiny-target" / name.split("--")[1] /
                              "training_summary.json").read_text())
        loss = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "loss")}
        assert loss == pytest.approx({h["step"]: h["loss"] for h in summary["history"]})
        assert child.data.metrics["best_val_loss"] == pytest.approx(summary["best_val_loss"])
        assert child.data.params["condition"] == name.split("--")[1]
        assert "tokens_per_s" in child.data.metrics
    manifest = json.loads((run_dir / "manifest.json").read_text())
    m = parent.data.metrics
    assert m["stage/train/seconds"] == pytest.approx(manifest["stages"]["train"]["wall_s"])
    summary = json.loads((run_dir / "eval" / "tiny-target" / "summary.json").read_text())
    for condition, s in summary["perplexity"]["outputs"]["summary"].items():
        key = f"score/tiny-target/perplexity/outputs/summary/{condition}/mean"
        assert m[key] == pytest.approx(s["mean"])
    for d in summary["diversity"]:
        key = f"score/tiny-target/diversity/{d['condition']}/self_bleu_document"
        assert m[key] == pytest.approx(d["self_bleu_document"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/tables.md"} <= artifacts
