"""The report's safety and self-preference part (PAPER.md Table 3, the danger zone), from
judge/<target>/{judgements,danger_zone,spb}.parquet and judge_summary.json.

Conditions with several seeds are shown as mean and standard deviation over the seeds'
adapters; each adapter's own numbers stay in the per-response files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.design import HUMAN, VANILLA, judge_dir
from synth_ray.metrics.judging import first_scope, in_family
from synth_ray.metrics.stats import compare_family
from synth_ray.report.tables import condition_order as _order
from synth_ray.report.tables import md_table
from synth_ray.runtime.pipeline import Context
from synth_ray.runtime.rundir import atomic_write_with


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    _pyplot().close(fig)


def by_condition(frame: pl.DataFrame, value: str, keys: list[str]) -> pl.DataFrame:
    """Mean and SD over seeds (adapters) of a per-adapter value."""
    return (frame.group_by(keys).agg(pl.col(value).mean().alias("mean"),
                                     pl.col(value).std().alias("sd"),
                                     pl.len().alias("adapters"))
            .sort(keys))


def _mean_sd(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.3g}" if sd is None or sd != sd else f"{mean:.3g} ± {sd:.2g}"


def _scoped(zone: pl.DataFrame) -> pl.DataFrame:
    """`condition` named with its bracket family where vanilla or human has a row per
    bracket (the authors' per-bracket quality rule): "vanilla (small)"; with one bracket
    the name alone."""
    if "scope" not in zone.columns or zone["scope"].drop_nulls().n_unique() < 2:
        return zone
    return zone.with_columns(condition=pl.when(
        pl.col("scope").is_not_null() & ~pl.col("condition").str.contains("-"))
        .then(pl.format("{} ({})", "condition", "scope")).otherwise(pl.col("condition")))


def condition_rows(zone: pl.DataFrame) -> list[list[Any]]:
    """Per (condition, prompt set): harm, quality and danger share as mean ± SD over seeds."""
    keys = ["condition", "prompt_set"]
    zone = _scoped(zone)
    stats = {col: {(r["condition"], r["prompt_set"]): r
                   for r in by_condition(zone, col, keys).iter_rows(named=True)}
             for col in ("harm_mean", "quality_mean", "danger_share")}
    out = []
    for key in sorted(stats["danger_share"], key=lambda k: (_order(k[0]), k)):
        cells = [_mean_sd(stats[c][key]["mean"], stats[c][key]["sd"]) for c in stats]
        out.append([*key, *cells, stats["danger_share"][key]["adapters"]])
    return out


def scatter_plot(table: pl.DataFrame, harm_thr: int, quality_thr: int, quality_max: int,
                 path: Path, title: str, brackets: list[str]) -> None:
    """Quality against harm per response, jittered, one colour per condition; the danger
    zone (harm >= threshold and quality >= threshold) shaded. Vanilla and human: their
    first bracket's family (`brackets`: the config's order)."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.add_patch(plt.Rectangle((harm_thr - 0.5, quality_thr - 0.5), 5.5 - harm_thr + 0.5,
                               quality_max + 0.5 - quality_thr + 0.5, color="red", alpha=0.12,
                               label="danger zone"))
    rng = np.random.default_rng(0)
    scored = first_scope(table, ["adapter", "item_id"], brackets).drop_nulls(["harm", "quality"])
    for cond in sorted(set(scored["condition"]), key=_order):
        part = scored.filter(pl.col("condition") == cond)
        ax.scatter(part["harm"].to_numpy() + rng.uniform(-0.3, 0.3, part.height),
                   part["quality"].to_numpy() + rng.uniform(-0.3, 0.3, part.height),
                   s=12, alpha=0.6, label=f"{cond} (n={part.height})")
    ax.set_xlim(0.5, 5.5)
    ax.set_ylim(0.5, quality_max + 0.5)
    ax.set_xlabel("harmfulness (1 = refuses, 5 = fully complies)")
    ax.set_ylabel(f"quality (1-{quality_max})")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    _save(fig, path)


def spb_plot(spb: pl.DataFrame, path: Path, title: str) -> None:
    """SPB and pro-synthetic bias per condition (mean over seeds, SD as error bars)."""
    import numpy as np

    plt = _pyplot()
    conds = sorted(set(spb["condition"]), key=_order)
    x = np.arange(len(conds))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for off, col, label in ((-0.2, "spb", "self-preference bias"),
                            (0.2, "pro_synthetic_bias", "pro-synthetic bias")):
        stats = by_condition(spb.drop_nulls(col), col, ["condition"])
        got = {r["condition"]: r for r in stats.iter_rows(named=True)}
        means = [got[c]["mean"] if c in got else np.nan for c in conds]
        sds = [got[c]["sd"] or 0.0 if c in got else 0.0 for c in conds]
        ax.bar(x + off, means, width=0.4, yerr=sds, capsize=3, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, conds, rotation=20)
    ax.set_ylabel("bias (probability)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def harm_tests(table: pl.DataFrame, brackets: list[str]) -> str | None:
    """The authors' harm tests per bracket and prompt set: Kruskal-Wallis over the bracket's
    vanilla / single / multi / human harm scores (seeds pooled), then pairwise Mann-Whitney U
    with Bonferroni over its 6 pairs (alpha 0.05 / 6)."""
    rows = []
    for bracket in brackets:
        family = [VANILLA, f"single-{bracket}", f"multi-{bracket}", HUMAN]
        for pset in sorted(set(table["prompt_set"])):
            part = in_family(table, bracket).filter(pl.col("prompt_set") == pset)
            got = compare_family({c: part.filter(pl.col("condition") == c)["harm"]
                                  .drop_nulls().to_list() for c in family}, family)
            kw = got["kruskal"]
            rows += [[bracket, pset, kw["H"] if kw else "-", kw["p"] if kw else "-", p["a"],
                      p["b"], p["U"], p["p_bonferroni"]] for p in got["pairs"]]
    if not rows:
        return None
    return md_table(["bracket", "prompt set", "Kruskal-Wallis H", "p", "a", "b",
                     "Mann-Whitney U", "p (Bonferroni, 6 pairs)"], rows)


def safety_section(ctx: Context, plots: Path) -> tuple[str, list[str]]:
    judge = ctx.cfg.judge
    parts, images = [], []
    for target in ctx.cfg.targets:
        base = ctx.run.path(judge_dir(target.name))
        if not (base / "danger_zone.parquet").exists():
            parts.append(f"### {target.name}\n\n_Not judged yet._")
            continue
        zone = pl.read_parquet(base / "danger_zone.parquet")
        table = pl.read_parquet(base / "judgements.parquet")
        summary = json.loads((base / "judge_summary.json").read_text())
        rows = condition_rows(zone)
        scored = _scoped(zone).group_by("condition").agg(pl.col("scored").sum(),
                                                pl.col("unscored").sum())
        judge_rows = [[k, s["answers"], s["unparsable"], s["unparsable_rate"],
                       s["consistency"]["items"], s["consistency"]["exact"],
                       s["consistency"]["mean_abs_diff"]]
                      for k, s in summary["judge"].items()]
        name = f"danger_{target.name}.png"
        scatter_plot(table, judge.harm_threshold, judge.quality_threshold, judge.quality_max,
                     plots / name, f"{target.name}: quality vs harm ({judge.model})",
                     list(ctx.cfg.brackets()))
        images.append(name)
        text = [
            f"### {target.name}",
            f"Judge `{judge.model}` ({judge.backend}). Danger zone: harm >= "
            f"{judge.harm_threshold} and "
            f"quality >= {judge.quality_threshold}; share of responses whose two scores parsed "
            "(mean and SD over seeds):",
            md_table(["condition", "prompt set", "harm", "quality", "danger share", "adapters"],
                rows),
            "Responses scored / not scored: " + ", ".join(
                f"{r['condition']} {r['scored']}/{r['unscored']}"
                for r in sorted(scored.iter_rows(named=True),
                                key=lambda r: _order(r["condition"]))),
            "Judge reliability (unparsable answers are kept and counted, never guessed; "
            "consistency on the items judged twice):",
            md_table(["score", "answers", "unparsable", "rate", "judged twice", "exact agreement",
                 "mean abs. diff."], judge_rows),
        ]
        tests = harm_tests(table, list(ctx.cfg.brackets()))
        if tests:
            text += ["Harm tests per bracket (the authors': Kruskal-Wallis, then Mann-Whitney U "
                     "with Bonferroni over the bracket's 6 pairs; seeds pooled):", tests]
        if (base / "spb.parquet").exists():
            spb = pl.read_parquet(base / "spb.parquet")
            srows = [[r["condition"], r["adapter"], r["spb"], r["pro_synthetic_bias"],
                      r["position_bias"], r["a_win_rate"], r["pairs"], r["failed"]]
                     for r in sorted(spb.iter_rows(named=True),
                                     key=lambda r: _order(r["condition"]))]
            text += [
                f"Self-preference bias (self source `{target.self_source}`; SPB = S_self - "
                "mean S of the other synthetic sources; pro-synthetic = mean synthetic S - "
                "S_human; position bias = mean p(A) - 0.5 and the share of judgements A wins, "
                "cancelled in S by showing both orders):",
                md_table(["condition", "adapter", "SPB", "pro-synthetic", "position bias",
                     "A wins", "judgements", "failed"], srows),
            ]
            name = f"spb_{target.name}.png"
            spb_plot(spb, plots / name, f"{target.name}: self-preference bias")
            images.append(name)
        parts.append("\n\n".join(text))
    return "\n\n".join(parts) or "_No target configured._", images
