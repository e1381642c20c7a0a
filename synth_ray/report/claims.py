"""The report's "Claims" section: per target, diversity, perplexity and output length per
condition (mean ± SD over seeds, with a plot), then a verdict for each of the paper's three
claims per bracket with the tests behind it (`report/verdicts.py`: tests across items that
use every seed's items)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.config import ExperimentConfig
from synth_ray.design import VANILLA, adapter_grid, responses_path, score_dir
from synth_ray.report.paper_tables import adapter_values
from synth_ray.report.tables import md_table
from synth_ray.report.tables import read_json as _json
from synth_ray.report.verdicts import verdicts
from synth_ray.runtime.rundir import atomic_write_with

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
    seeds = len(ctx.cfg.training.seeds)
    how = ("one rule, whatever the seeds: a check holds only where a test across items, "
           f"with every seed's items ({seeds} seed{'s' if seeds > 1 else ''} here), is "
           "significant at alpha 0.05 after its family's correction and its statistic, its "
           "effect size and each seed's effect point the same way; checks without a test "
           "across items are shown, never counted")
    for target in ctx.cfg.targets:
        frame = adapter_values(ctx.cfg, ctx.run.root, target.name)
        if not frame.height:
            continue
        summary = _json(ctx.run.path(score_dir(target.name), "summary.json"))
        text = [f"### {target.name}"]
        if summary:
            resp_path = ctx.run.path(responses_path(target.name))
            responses = pl.read_parquet(resp_path) if resp_path.exists() else None
            stats = seed_stats(per_adapter(ctx.cfg, summary, responses))
            name = f"claims_{target.name}.png"
            claims_plot(stats, plots / name, f"{target.name}: diversity and perplexity")
            images.append(name)
            text += [
                "Mean ± SD over training seeds of each condition's outputs on the test "
                "prompts (\"human test answers\": the held-out human answers themselves, for "
                "scale; they are longer than the models' capped outputs, which lowers their "
                "Self-BLEU):",
                md_table(["condition", "seeds", "lexical diversity", "perplexity",
                          "words per output"],
                         [[c, s["diversity"][2], _cell(s["diversity"]), _cell(s["perplexity"]),
                           _cell(s["words"])] for c, s in stats.items()])]
        lines = verdicts(ctx.cfg, ctx.run.root, target, frame)
        text += [f"The paper's three claims ({how}):",
                 "\n\n".join(lines) or "No single/multi pair of conditions in this run."]
        parts.append("\n\n".join(text))
    return "\n\n".join(parts) or "_Not scored yet._", images
