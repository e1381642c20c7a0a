"""The whole report/tables.md: its heading (config hash, library versions, a rehearsal's
swaps), then the ten sections in order, each from its module of `report/`. Returns the
Markdown and the plots the sections wrote, for `report/html.py` to render."""

from __future__ import annotations

from pathlib import Path

from synth_ray.report.claims import claims_section
from synth_ray.report.cost import cost_section
from synth_ray.report.evaluation import evaluation_section
from synth_ray.report.paper_tables import paper_tables
from synth_ray.report.safety import safety_section
from synth_ray.report.sections import datasets_section, generation_section, training_section
from synth_ray.report.tables import md_table
from synth_ray.runtime.pipeline import Context, stage_names
from synth_ray.runtime.rundir import hash_file


def rehearsal_section(cfg) -> list[str]:
    """A rehearsal's report opens with what was swapped: its numbers are the stand-ins'."""
    rehearsal = cfg.rehearsal
    if rehearsal is None:
        return []
    return ["## Rehearsal", f"A rehearsal of `{rehearsal.config}` (`synth-ray rehearse`): every "
            "stage ran with the config's own settings except these swaps; the numbers below are "
            "the stand-ins', not the study's.",
            md_table(["key", "config", "rehearsal", "why"],
                     [[f"`{w.key}`", f"`{w.real}`", f"`{w.stand_in}`", w.why]
                      for w in rehearsal.swaps])]


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
