"""Stage `report`: the paper's tables and plots from the run's own files.

Writes report/tables.md, report/index.html and report/plots/*.png. Every table is built
from the run directory (manifest, datasets/summary.json, adapters/*/training_summary.json,
eval/*/summary.json, eval/*/perplexity.parquet, and judge/*/'s files via `report/safety.py`); a
section whose stage has not produced its files says so instead of showing numbers. The
report names the config and library versions it came from, so two runs can be compared.
The sections are `synth_ray/report/`'s (`report/document.py` puts them in order); this
stage gathers the run's files as its inputs, and writes the Markdown and its HTML.
"""

from __future__ import annotations

from typing import Any

from synth_ray.design import DATASETS_SUMMARY, REPORT_DIR, adapter_dir, judge_dir, score_dir
from synth_ray.report.document import build_markdown
from synth_ray.report.html import render
from synth_ray.runtime.pipeline import Context, StageOutput
from synth_ray.runtime.rundir import atomic_write_text, hash_file


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
