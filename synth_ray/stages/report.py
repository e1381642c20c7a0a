"""Stage `report`: the paper's tables and plots from the run's own files.

Writes report/tables.md, report/index.html and report/plots/*.png. Every table is built
from the run directory (manifest, datasets/summary.json, adapters/*/training_summary.json,
eval/*/summary.json, eval/*/perplexity.parquet, and judge/*/'s files via `report/safety.py`); a
section whose stage has not produced its files says so instead of showing numbers. The
report names the config and library versions it came from, so two runs can be compared.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.design import DATASETS_SUMMARY, REPORT_DIR, adapter_dir, judge_dir, score_dir
from synth_ray.report.claims import claims_section
from synth_ray.report.html import render
from synth_ray.report.paper_tables import paper_tables
from synth_ray.report.safety import safety_section
from synth_ray.report.tables import condition_order as _order
from synth_ray.report.tables import md_table
from synth_ray.report.tables import read_json as _json
from synth_ray.runtime.pipeline import Context, StageOutput, stage_names
from synth_ray.runtime.rundir import atomic_write_text, atomic_write_with, hash_file


def generation_section(ctx: Context) -> str:
    rec = ctx.run.stage("generate")
    if not rec or rec.get("status") != "done":
        return "_Generation has not run._"
    rows = [[name, s["rows"], s.get("summaries", 0), s["status"].get("ok", 0),
             s["status"].get("truncated", 0), s["status"].get("empty", 0),
             s["status"].get("error", 0), s["completion_tokens"], s["tokens_per_s"],
             s["wall_s"]] for name, s in rec["sources"].items()]
    return md_table(["source", "rows", "of which summaries", "ok", "truncated", "empty",
                     "error", "output tokens", "tokens/s", "wall s"], rows)


def datasets_section(ctx: Context) -> str:
    doc = _json(ctx.run.path(DATASETS_SUMMARY))
    if not doc:
        return "_Training sets have not been built._"
    rows = [[c, d["rows"], d["train"], d["validation"], ", ".join(d["sources"]),
             d["response_words"]["mean"], d.get("self_bleu_aggregated", float("nan")),
             json.dumps(d["excluded"])] for c, d in sorted(doc["conditions"].items(),
                                                          key=lambda kv: _order(kv[0]))]
    table = md_table(["condition", "rows", "train", "validation", "sources",
                      "mean words", "Self-BLEU-3 (aggr.)", "excluded"], rows)
    probe = doc.get("source_independence")
    if probe:
        table += ("\n\nSource independence on the shared probe set (every source answered the "
                  "same test instructions; higher = more alike; `human`: the dataset's own "
                  "answers):\n\n" + md_table(
                      ["bracket", "source a", "source b", "prompts", "cross-source BLEU",
                       "embedding cosine", "vocabulary Jaccard"],
                      [[r["bracket"], r["source_a"], r["source_b"], r["prompts"],
                        r["cross_bleu"], r["embedding_cosine"], r["vocabulary_jaccard"]]
                       for r in probe]))
    return table


def training_section(ctx: Context, plots: Path) -> tuple[str, list[str]]:
    files = sorted(ctx.run.root.glob(adapter_dir("*", "*") + "/training_summary.json"))
    if not files:
        return "_No adapter has been trained._", []
    rows, images = [], []
    for f in files:
        s = json.loads(f.read_text())
        rows.append([s["target"], s["condition"], s["seed"], s["steps"], s["best_step"],
                     s["best_val_loss"], "yes" if s["stopped_early"] else "no", s["strategy"]])
        curve = f.parent / "loss_curve.png"
        if curve.exists():
            name = f"loss_{f.parent.parent.name}_{f.parent.name}.png"
            shutil.copyfile(curve, plots / name)
            images.append(name)
    return md_table(["target", "condition", "seed", "steps", "best step", "best val. loss",
                     "stopped early", "strategy"], rows), images


def perplexity_plot(scores: pl.DataFrame, path: Path, title: str) -> None:
    """Distribution of per-sample perplexity per condition (cf. the paper's Figure C.1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = scores.filter((pl.col("view") == "outputs") & pl.col("perplexity").is_not_null())
    conds = sorted(set(part["condition"]), key=_order)
    data = [part.filter(pl.col("condition") == c)["perplexity"].to_list() for c in conds]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(conds) + 1), conds, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("perplexity under the vanilla target")
    ax.set_title(title)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def bracket_tests(brackets: dict[str, Any]) -> list[str]:
    """Per bracket, the paper's family (vanilla, single, multi, human): Levene, Kruskal-Wallis
    and the pairwise tests with Bonferroni over its own pairs."""
    if not brackets:
        return []
    rows, notes = [], []
    for b, t in brackets.items():
        lev, kw = t.get("levene"), t.get("kruskal")
        notes.append(f"{b}: " + (f"Levene W = {lev['W']:.3g}, p = {lev['p']:.3g}; "
                                 if lev else "") +
                     (f"Kruskal-Wallis H = {kw['H']:.3g}, p = {kw['p']:.3g}" if kw
                      else "fewer than two conditions"))
        rows += [[b, p["a"], p["b"], p["U"], p["p"], p["p_bonferroni"]] for p in t["pairs"]]
    return ["Per bracket, over its own conditions (vanilla, single, multi, human; Bonferroni "
            "over their pairs, as the authors): " + "; ".join(notes) + ".",
            md_table(["bracket", "a", "b", "U", "p", "p (Bonferroni, bracket)"], rows)]


def evaluation_section(ctx: Context, plots: Path) -> tuple[str, list[str]]:
    parts, images = [], []
    for target in ctx.cfg.targets:
        summary = _json(ctx.run.path(score_dir(target.name), "summary.json"))
        if not summary:
            parts.append(f"### {target.name}\n\n_Not scored yet._")
            continue
        ppl = summary["perplexity"]["outputs"]
        rows = [[c, s["n"], s["n_kept"], s["mean"], s["median"], s["ci_low"], s["ci_high"]]
                for c, s in sorted(ppl["summary"].items(), key=lambda kv: _order(kv[0]))]
        kw = ppl["tests"]["kruskal"]
        tests = (f"Kruskal-Wallis H = {kw['H']:.3g}, p = {kw['p']:.3g}" if kw else
                 "Kruskal-Wallis: fewer than two groups")
        pairs = md_table(["a", "b", "U", "p (Bonferroni)"],
                         [[p["a"], p["b"], p["U"], p["p_bonferroni"]]
                          for p in ppl["tests"]["pairs"]])
        family = bracket_tests(ppl.get("brackets") or {})
        semantic = bracket_tests(summary.get("semantic_tests") or {})
        if semantic:  # `semantic: authors`: the authors' tests on sampled distances
            semantic.insert(0, "Semantic diversity, the authors' tests on 10,000 sampled "
                               "pairwise distances per condition (seeds pooled):")
        div = [[d["condition"], d["lexical_diversity_individual"],
                d["lexical_diversity_aggregated"], d["self_bleu_document"],
                d["semantic_diversity"], d.get("heaps_beta", float("nan")), d["responses"]]
               for d in sorted(summary["diversity"], key=lambda d: _order(d["condition"]))]
        human = summary["perplexity"]["human"]["summary"]
        human_rows = [[c, s["n"], s["mean"], s["median"]] for c, s in sorted(human.items())]
        scores_path = ctx.run.path(score_dir(target.name), "perplexity.parquet")
        if scores_path.exists():
            name = f"perplexity_{target.name}.png"
            perplexity_plot(pl.read_parquet(scores_path), plots / name,
                            f"{target.name}: perplexity of outputs")
            images.append(name)
        parts.append("\n\n".join([
            f"### {target.name}",
            "Perplexity of outputs, scored by the vanilla target (mean with Tukey-fence "
            "outliers removed, median, 95% bootstrap CI):",
            md_table(["condition", "n", "kept", "mean", "median", "CI low", "CI high"], rows),
            tests + ". Pairwise Mann-Whitney U:", pairs,
            *family,
            "Perplexity of the human test responses under each fine-tuned adapter:",
            md_table(["adapter", "n", "mean", "median"], human_rows),
            "Diversity of outputs (lexical = 100 - Self-BLEU-3):",
            md_table(["condition", "lexical (individual)", "lexical (aggregated)",
                      "Self-BLEU-3 (documents)", "semantic", "Heaps β", "responses"], div),
            *semantic,
        ]))
    return "\n\n".join(parts) or "_No target configured._", images


def cost_section(ctx: Context, plots: Path) -> tuple[str, list[str]]:
    """Per stage: wall time, tokens and tokens/s of the engine stages, GPU-hours (wall time x
    the cluster's GPUs: an upper bound), and the tokens sent to hosted APIs."""
    recorded = ctx.run.manifest()["stages"]
    rows, names, walls = [], [], []
    api_tokens = 0
    for name in stage_names():
        rec = recorded.get(name)
        if not rec or rec.get("status") != "done" or name == "report":
            continue
        parts = list((rec.get("sources") or {}).items()) + list(
            (rec.get("targets") or {}).items())
        calls = [p.get("calls", p) for _, p in parts]
        tokens = sum(c.get("prompt_tokens", 0) + c.get("completion_tokens", 0) for c in calls)
        out_tokens = sum(c.get("completion_tokens", 0) for c in calls)
        engine_s = sum(c.get("wall_s", 0) for c in calls)
        if name == "generate":
            api_tokens += sum(s.get("prompt_tokens", 0) + s.get("completion_tokens", 0)
                              for n, s in parts if ctx.cfg.source(n).backend == "http")
        gpu_h = rec.get("wall_s", 0) * rec.get("cluster_gpus", 0) / 3600
        rows.append([name, rec.get("wall_s", 0), tokens or "-", out_tokens or "-",
                     round(out_tokens / engine_s, 1) if engine_s and out_tokens else "-",
                     round(gpu_h, 3)])
        names.append(name)
        walls.append(rec.get("wall_s", 0))
    if not rows:
        return "_No stage has finished._", []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.barh(names[::-1], walls[::-1])
    ax.set_xlabel("wall time (s)")
    ax.set_title("time per stage")
    fig.tight_layout()
    atomic_write_with(plots / "stage_time.png",
                      lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    table = md_table(["stage", "wall s", "tokens (in+out)", "output tokens",
                      "output tokens/s", "GPU-hours (bound)"], rows)
    table += f"\n\nTokens sent to hosted APIs (prompt + completion): {api_tokens}."
    spend = api_spend(ctx, recorded)
    if spend:
        table += "\n\n" + md_table(
            ["hosted endpoint", "prompt tokens", "completion tokens", "US dollars"],
            [[n, pt, ct, "no price set" if usd is None else f"{usd:.2f}"]
             for n, pt, ct, usd in spend])
    return table, ["stage_time.png"]


def api_spend(ctx: Context, recorded: dict) -> list[tuple[str, int, int, float | None]]:
    """What each hosted endpoint was sent, counted per row, and its price at the config's
    `usd_per_million_*` (the source's tokens in generate, the judge's in judge)."""
    cfg, out = ctx.cfg, []
    gen = recorded.get("generate") or {}
    for name, s in (gen.get("sources") or {}).items():
        src = next((x for x in cfg.sources if x.name == name), None)
        if src is not None and src.backend == "http":
            pt, ct = s.get("prompt_tokens", 0), s.get("completion_tokens", 0)
            out.append((f"source {name}", pt, ct, src.http.usd(pt, ct)))
    judge = recorded.get("judge") or {}
    if cfg.judge.backend == "http" and judge.get("targets"):
        calls = [t.get("calls", {}) for t in judge["targets"].values()]
        pt = sum(c.get("prompt_tokens", 0) for c in calls)
        ct = sum(c.get("completion_tokens", 0) for c in calls)
        out.append(("judge", pt, ct, cfg.judge.http.usd(pt, ct)))
    return out


def rehearsal_section(cfg) -> list[str]:
    """A rehearsal's report opens with what was swapped: its numbers are the stand-ins'."""
    r = cfg.rehearsal
    if r is None:
        return []
    return ["## Rehearsal", f"A rehearsal of `{r.config}` (`synth-ray rehearse`): every stage "
            "ran with the config's own settings except these swaps; the numbers below are "
            "the stand-ins', not the study's.",
            md_table(["key", "config", "rehearsal", "why"],
                     [[f"`{w.key}`", f"`{w.real}`", f"`{w.stand_in}`", w.why]
                      for w in r.swaps])]


def build_markdown(ctx: Context, plots: Path) -> tuple[str, list[str]]:
    manifest = ctx.run.manifest()
    versions = next((s.get("versions") for s in manifest["stages"].values()
                     if s.get("versions")), {})
    recorded = manifest["stages"]
    stages = md_table(["stage", "status", "wall s", "summary"],
                      [[n, recorded[n].get("status"), recorded[n].get("wall_s", ""),
                        recorded[n].get("summary", "")]
                       for n in stage_names() if n in recorded and n != "report"])
    training, train_imgs = training_section(ctx, plots)
    evaluation, eval_imgs = evaluation_section(ctx, plots)
    safety, safety_imgs = safety_section(ctx, plots)
    claims, claims_imgs = claims_section(ctx, plots)
    cost, cost_imgs = cost_section(ctx, plots)
    md = "\n\n".join([
        f"# synth-ray report: {ctx.cfg.run.name}",
        *rehearsal_section(ctx.cfg),
        f"Run directory `{ctx.run.uri() or ctx.run.root}`; config `config.yaml` (hash "
        f"{hash_file(ctx.run.path('config.yaml'))}); versions: "
        + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        "## Claims", claims,
        "## Paper tables", paper_tables(ctx.cfg, ctx.run.root),
        "## Stages", stages,
        "## Generation", generation_section(ctx),
        "## Training sets", datasets_section(ctx),
        "## Training", training,
        "## Evaluation", evaluation,
        "## Safety and self-preference", safety,
        "## Throughput and cost", cost,
    ]) + "\n"
    return md, claims_imgs + train_imgs + eval_imgs + safety_imgs + cost_imgs


def inputs(ctx: Context) -> dict[str, Any]:
    files = [p for pattern in (DATASETS_SUMMARY, adapter_dir("*", "*") + "/training_summary.json",
                               score_dir("*") + "/summary.json",
                               score_dir("*") + "/perplexity.parquet",
                               judge_dir("*") + "/judge_summary.json",
                               judge_dir("*") + "/danger_zone.parquet",
                               judge_dir("*") + "/judgements.parquet",
                               judge_dir("*") + "/spb.parquet")
             for p in sorted(ctx.run.root.glob(pattern))]
    stages = {n: s.get("input_hash") for n, s in ctx.run.manifest()["stages"].items()
              if n != "report"}
    return {"files": {str(p.relative_to(ctx.run.root)): hash_file(p) for p in files},
            "stages": stages}


def run(ctx: Context) -> StageOutput:
    plots = ctx.run.path(REPORT_DIR, "plots")
    plots.mkdir(parents=True, exist_ok=True)
    md, images = build_markdown(ctx, plots)
    atomic_write_text(ctx.run.path(REPORT_DIR, "tables.md"), md)
    atomic_write_text(ctx.run.path(REPORT_DIR, "index.html"),
                      render(md, images, plots, f"synth-ray: {ctx.cfg.run.name}"))
    index = ctx.run.path(REPORT_DIR, "index.html").resolve()
    return StageOutput([f"{REPORT_DIR}/tables.md", f"{REPORT_DIR}/index.html"],
                       {"plots": len(images)}, f"report at {index}")
