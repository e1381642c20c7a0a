"""The report's sections on the pipeline's own records: what generation produced (per
source), the training sets `build` wrote (datasets/summary.json) and the adapters `train`
left (adapters/*/training_summary.json, with their loss curves). A section whose stage has
not produced its files says so instead of showing numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from synth_ray.design import DATASETS_SUMMARY, adapter_dir
from synth_ray.report.tables import condition_order as _order
from synth_ray.report.tables import md_table
from synth_ray.report.tables import read_json as _json
from synth_ray.runtime.pipeline import Context


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
