"""The report's "Claims" section: the paper's diversity claims, checked against this run's
own numbers with the seeds as error bars, one verdict line per claim and bracket.

Claims (PAPER.md): multi-source synthetic data keeps the fine-tuned model's outputs more
diverse (lexical diversity, 100 - Self-BLEU-3 over the pooled outputs) and broader (higher
perplexity under the vanilla target) than single-source data; human data gives the most
diverse outputs. A verdict says "holds" only when the two conditions' means lie further
apart than the sum of their seed SDs (their error bars do not overlap), "reversed" when
they lie that far apart the other way, and otherwise that there is no effect beyond the
seed spread, which is a result too (stated as measured).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.core.config import ExperimentConfig
from synth_ray.core.rundir import atomic_write_with
from synth_ray.design import VANILLA, adapter_grid, responses_path, score_dir
from synth_ray.report.tables import md_table
from synth_ray.report.tables import read_json as _json

METRICS = {"diversity": "lexical diversity (aggregated, 100 - Self-BLEU-3)",
           "perplexity": "perplexity of outputs under the vanilla target",
           "words": "words per output"}


def per_adapter(cfg: ExperimentConfig, summary: dict[str, Any],
                responses: pl.DataFrame | None) -> pl.DataFrame:
    """One row per adapter: condition, seed, diversity, perplexity, words per output."""
    grid = [(VANILLA, None, VANILLA), *adapter_grid(cfg)]
    div = {d["condition"]: d["lexical_diversity_aggregated"] for d in summary["diversity"]}
    ppl = {c: s["mean"] for c, s in summary["perplexity"]["outputs"]["summary"].items()}
    words: dict[str, float] = {}
    if responses is not None and responses.height:
        ok = responses.filter(pl.col("status").is_in(["ok", "truncated"]))
        words = dict(ok.group_by("source").agg(
            pl.col("response").str.split(" ").list.len().mean()).iter_rows())
    rows = [{"condition": cond, "seed": seed, "adapter": name, "diversity": div.get(name),
             "perplexity": ppl.get(name), "words": words.get(name)}
            for cond, seed, name in grid]
    rows.append({"condition": "human test answers", "seed": None, "adapter": "human-reference",
                 "diversity": div.get("human-reference"), "perplexity": ppl.get("human-reference"),
                 "words": None})
    return pl.DataFrame(rows, schema={"condition": pl.Utf8, "seed": pl.Int64, "adapter": pl.Utf8,
                                      "diversity": pl.Float64, "perplexity": pl.Float64,
                                      "words": pl.Float64})


def seed_stats(rows: pl.DataFrame) -> dict[str, dict[str, tuple[float | None, float | None, int]]]:
    """condition -> metric -> (mean, SD over seeds or None with one seed, seeds)."""
    out: dict[str, dict[str, tuple[float | None, float | None, int]]] = {}
    for cond in dict.fromkeys(rows["condition"]):
        part = rows.filter(pl.col("condition") == cond)
        out[cond] = {}
        for m in METRICS:
            vals = part[m].drop_nulls()
            n = vals.len()
            out[cond][m] = (vals.mean() if n else None, vals.std() if n > 1 else None, n)
    return out


def verdict(claim: str, a: str, b: str, metric: str,
            stats: dict[str, dict[str, tuple[float | None, float | None, int]]]) -> str:
    """One line: does condition `a` exceed condition `b` on `metric` beyond the seed spread?"""
    (ma, sa, na), (mb, sb, nb) = stats[a][metric], stats[b][metric]
    if ma is None or mb is None:
        return f"- {claim}: not measured ({a} or {b} has no {metric})."
    diff = ma - mb
    shown = (f"{a} {_cell(stats[a][metric])} vs {b} {_cell(stats[b][metric])} "
             f"(n = {na}, {nb})")
    if sa is None or sb is None:
        way = "higher" if diff > 0 else "lower" if diff < 0 else "equal"
        return (f"- {claim}: one seed only, no spread to judge against; {a} is {way}: "
                f"{shown}.")
    spread = sa + sb
    if abs(diff) <= spread:
        return (f"- {claim}: **no effect beyond the seed spread**: difference {diff:+.3g} "
                f"within the error bars ({spread:.2g}); {shown}.")
    word = "**holds**" if diff > 0 else "**reversed**"
    return (f"- {claim}: {word}: difference {diff:+.3g}, beyond the error bars "
            f"({spread:.2g}); {shown}.")


def claim_lines(cfg: ExperimentConfig, stats: dict) -> list[str]:
    lines = []
    for bracket in cfg.brackets():
        single, multi = f"single-{bracket}", f"multi-{bracket}"
        if single not in stats or multi not in stats:
            continue
        lines.append(verdict(f"[{bracket}] multi-source outputs are more diverse than "
                             "single-source", multi, single, "diversity", stats))
        lines.append(verdict(f"[{bracket}] multi-source outputs have higher perplexity than "
                             "single-source (a broader distribution)", multi, single,
                             "perplexity", stats))
        if "human" in stats:
            lines.append(verdict(f"[{bracket}] human data gives more diverse outputs than "
                                 "multi-source", "human", multi, "diversity", stats))
    return lines


def claims_plot(stats: dict, path: Path, title: str) -> None:
    """Diversity and perplexity per condition, mean with SD-over-seeds error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = [c for c in stats if stats[c]["diversity"][0] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, label in ((axes[0], "diversity", "lexical diversity (aggregated)"),
                              (axes[1], "perplexity", "perplexity under vanilla target")):
        means = [stats[c][metric][0] or 0.0 for c in conds]
        sds = [stats[c][metric][1] or 0.0 for c in conds]
        colors = ["#999999" if c in ("vanilla", "human test answers") else
                  "#4c72b0" if c == "human" else
                  "#dd8452" if c.startswith("single") else "#55a868" for c in conds]
        ax.bar(range(len(conds)), means, yerr=sds, capsize=4, color=colors)
        ax.set_xticks(range(len(conds)), conds, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(label)
        if metric == "perplexity":  # human text scores far above any model's outputs
            ax.set_yscale("log")
    fig.suptitle(title + " (error bars: SD over seeds)")
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def _cell(stat: tuple[float | None, float | None, int]) -> str:
    mean, sd, _ = stat
    if mean is None:
        return "-"
    return f"{mean:.3g}" if sd is None else f"{mean:.3g} ± {sd:.2g}"


def claims_section(ctx: Any, plots: Path) -> tuple[str, list[str]]:
    """Per target: diversity, perplexity and output length per condition (mean ± SD over
    seeds), the verdict per claim, and the plot."""

    parts, images = [], []
    for target in ctx.cfg.targets:
        summary = _json(ctx.run.path(score_dir(target.name), "summary.json"))
        if not summary:
            continue
        resp_path = ctx.run.path(responses_path(target.name))
        responses = pl.read_parquet(resp_path) if resp_path.exists() else None
        stats = seed_stats(per_adapter(ctx.cfg, summary, responses))
        table = md_table(["condition", "seeds", "lexical diversity", "perplexity",
                          "words per output"],
                         [[c, s["diversity"][2], _cell(s["diversity"]), _cell(s["perplexity"]),
                           _cell(s["words"])] for c, s in stats.items()])
        name = f"claims_{target.name}.png"
        claims_plot(stats, plots / name, f"{target.name}: diversity and perplexity")
        images.append(name)
        lines = claim_lines(ctx.cfg, stats) or ["- No single/multi pair of conditions to "
                                                "compare in this run."]
        parts.append("\n\n".join([
            f"### {target.name}",
            "Mean ± SD over training seeds of each condition's outputs on the test prompts "
            "(\"human test answers\": the held-out human answers themselves, for scale; "
            "they are longer than the models' capped outputs, which lowers their Self-BLEU):",
            table, "Verdicts (a claim holds when the error bars do not overlap):",
            "\n".join(lines)]))
    return "\n\n".join(parts) or "_Not scored yet._", images
