"""The report's "Throughput and cost" section: per stage, wall time, tokens, GPU-hours (a
bound) and a plot of time per stage, from the manifest; and what each hosted endpoint was
sent, with its price."""

from __future__ import annotations

from pathlib import Path

from synth_ray.report.tables import md_table
from synth_ray.runtime.pipeline import Context, stage_names
from synth_ray.runtime.rundir import atomic_write_with


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
