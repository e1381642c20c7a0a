"""The report's "Evaluation" section: per target, the perplexity of outputs under the vanilla
target (summary, tests, the per-bracket families, a distribution plot), the perplexity of
the human test responses and the diversity of outputs, from eval/<target>/summary.json and
perplexity.parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.design import score_dir
from synth_ray.report.tables import condition_order as _order
from synth_ray.report.tables import md_table
from synth_ray.report.tables import read_json as _json
from synth_ray.runtime.pipeline import Context
from synth_ray.runtime.rundir import atomic_write_with


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
