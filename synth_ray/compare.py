"""`synth-ray compare RUN_DIR...`: chosen metrics of several runs side by side (the paper's
"next checks", e.g. a temperature sweep), as Markdown tables and one plot.

Each run is read from its own files, as the report reads them (`report/paper_tables.py`:
eval/<target>/summary.json, judge/<target>/danger_zone.parquet and spb.parquet), with the
config it ran with (its config.yaml). The runs are labelled by the config keys whose values
differ between them (run.dir, run.name and tracking left out), so a sweep shows its axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import yaml

from synth_ray.config import ExperimentConfig, load_config
from synth_ray.report.paper_tables import adapter_values
from synth_ray.report.tables import condition_order, md_table
from synth_ray.runtime.rundir import atomic_write_text, atomic_write_with

DEFAULT_METRICS = ("perplexity", "lexical_individual", "lexical_aggregated", "semantic",
                   "harm_RB+J", "danger_RB+J", "spb")
IGNORED = ("run.", "tracking.")


class CompareError(ValueError):
    """A run that cannot be compared (no config.yaml) or a metric no run has."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def varied_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Dotted config keys whose values differ between the runs (a missing key differs)."""
    flat = [_flat(c) for c in configs]
    keys = sorted(set().union(*flat))
    return [k for k in keys if not k.startswith(IGNORED)
            and len({repr(f.get(k)) for f in flat}) > 1]


def load_runs(run_dirs: list[Path]) -> list[tuple[Path, ExperimentConfig, dict[str, Any]]]:
    out = []
    for d in run_dirs:
        path = Path(d) / "config.yaml"
        if not path.exists():
            raise CompareError(f"{d}: no config.yaml; not a synth-ray run directory")
        out.append((Path(d), load_config(path), yaml.safe_load(path.read_text())))
    return out


def labels(runs: list[tuple[Path, ExperimentConfig, dict[str, Any]]]) -> list[str]:
    keys = varied_keys([raw for _, _, raw in runs])
    if not keys:
        return [d.name for d, _, _ in runs]
    return [", ".join(f"{k.rsplit('.', 1)[-1]}={_flat(raw).get(k)}" for k in keys[:3])
            for _, _, raw in runs]


def compare_frame(run_dirs: list[Path], metrics: list[str]) -> tuple[pl.DataFrame, list[str]]:
    """(rows of run, label, target, condition, metric, mean, sd, adapters; varied keys)."""
    runs = load_runs(run_dirs)
    names = labels(runs)
    if len(set(names)) < len(names):  # two runs with the same settings: tell them apart
        names = [f"{n} ({d.name})" for n, (d, _, _) in zip(names, runs, strict=True)]
    rows = []
    for (d, cfg, _), name in zip(runs, names, strict=True):
        for target in cfg.targets:
            vals = adapter_values(cfg, d, target.name).filter(
                pl.col("metric").is_in(metrics)
                # one value per adapter: not the per-bracket lexical values that the
                # notebook's draws give human and vanilla (their row holds the first's)
                & ~(pl.col("kind").is_in(["vanilla", "human"]) & pl.col("bracket").is_not_null()))
            agg = vals.group_by("condition", "metric").agg(
                pl.col("value").mean().alias("mean"), pl.col("value").std().alias("sd"),
                pl.len().alias("adapters"))
            rows += [{"run": str(d), "label": name, "target": target.name, **r}
                     for r in agg.iter_rows(named=True)]
    frame = pl.DataFrame(rows, schema={"run": pl.Utf8, "label": pl.Utf8, "target": pl.Utf8,
                                       "condition": pl.Utf8, "metric": pl.Utf8,
                                       "mean": pl.Float64, "sd": pl.Float64,
                                       "adapters": pl.UInt32})
    missing = [m for m in metrics if m not in set(frame["metric"])]
    if len(missing) == len(metrics):
        raise CompareError(f"no run has any of the metrics {metrics} (has its score or judge "
                           "stage run?)")
    return frame, varied_keys([raw for _, _, raw in runs])


def markdown(frame: pl.DataFrame, metrics: list[str], keys: list[str]) -> str:
    """One table per (target, metric): conditions down, runs across (mean ± SD over seeds)."""
    runs = list(dict.fromkeys(frame["label"]))
    parts = [f"Runs differ in: {', '.join(keys) or 'nothing but their directory'}."]
    for target in dict.fromkeys(frame["target"]):
        for metric in metrics:
            part = frame.filter((pl.col("target") == target) & (pl.col("metric") == metric))
            if not part.height:
                parts.append(f"**{target}: {metric}**: not measured in these runs.")
                continue
            cells = {(r["condition"], r["label"]): r for r in part.iter_rows(named=True)}
            conds = sorted(set(part["condition"]), key=condition_order)
            body = [[c] + [_cell(cells.get((c, r))) for r in runs] for c in conds]
            parts += [f"**{target}: {metric}**", md_table(["condition", *runs], body)]
    return "\n\n".join(parts) + "\n"


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    sd = r["sd"]
    return f"{r['mean']:.4g}" if sd is None or sd != sd else f"{r['mean']:.4g} ± {sd:.2g}"


def plot(frame: pl.DataFrame, metrics: list[str], path: Path) -> None:
    """One panel per metric (first target): a line per condition across the runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = frame["target"][0]
    shown = [m for m in metrics if frame.filter(pl.col("metric") == m).height]
    runs = list(dict.fromkeys(frame["label"]))
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], shown, strict=True):
        part = frame.filter((pl.col("target") == target) & (pl.col("metric") == metric))
        for cond in sorted(set(part["condition"]), key=condition_order):
            got = {r["label"]: r for r in part.filter(pl.col("condition") == cond)
                   .iter_rows(named=True)}
            xs = [i for i, r in enumerate(runs) if r in got]
            ax.errorbar(xs, [got[runs[i]]["mean"] for i in xs],
                        yerr=[got[runs[i]]["sd"] or 0.0 for i in xs], marker="o", capsize=3,
                        label=cond)
        ax.set_xticks(range(len(runs)), runs, rotation=20, fontsize=7)
        ax.set_title(metric, fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{target}: runs compared")
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def compare(run_dirs: list[Path], metrics: list[str] | None = None,
            out: Path | None = None) -> str:
    """The Markdown; with `out`, also compare.md, compare.csv and compare.png there."""
    metrics = list(metrics or DEFAULT_METRICS)
    frame, keys = compare_frame(run_dirs, metrics)
    md = markdown(frame, metrics, keys)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "compare.md", md)
        atomic_write_with(out / "compare.csv", lambda tmp: frame.write_csv(tmp))
        plot(frame, metrics, out / "compare.png")
    return md
