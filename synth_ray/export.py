"""`synth-ray export RUN_DIR OUT [--push ORG]`: a run's training sets and adapters in the
Hugging Face Hub's formats, to hand to a colleague or publish.

- `OUT/datasets/<condition>/`: the condition's training set as the Hub lays a dataset out
  (`data/<split>-00000-of-00001.parquet`, a `README.md` dataset card whose YAML names the
  splits), so `datasets.load_dataset(folder)` reads it. Each row is the chat the target
  was trained on: `messages`, a list of {role, content} (the generation's system prompt,
  the user turn, the answer), with id, part, source and bracket.
- `OUT/adapters/<target>/<adapter>/`: the PEFT adapter files as trained (safetensors) and a
  model card (base model, condition, data, hyperparameters, training and evaluation
  numbers); `peft.PeftModel.from_pretrained(base, folder)` loads it.
- `--push ORG` creates private repos `ORG/<run>-<condition>` (datasets) and
  `ORG/<run>-<target>-<adapter>` (models) and uploads each folder with `huggingface_hub`
  (the token from HF_TOKEN or the Hub's login; never written or logged).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from synth_ray.config import ExperimentConfig
from synth_ray.design import (
    DATASETS_SUMMARY,
    adapter_dir,
    adapter_grid,
    dataset_path,
    judge_dir,
    part_sources,
    score_dir,
)
from synth_ray.metrics.judging import first_scope
from synth_ray.prompts import chat_messages
from synth_ray.runtime.status import run_config

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "training_summary.json")


def _messages(row: dict[str, Any], system_prompt: str | None) -> list[dict[str, str]]:
    return chat_messages(row["instruction"], row["context"] or "", system_prompt) + [
        {"role": "assistant", "content": row["response"]}]


def _card(meta: dict[str, Any], body: str) -> str:
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n{body.strip()}\n"


def export_dataset(cfg: ExperimentConfig, run_dir: Path, condition: str, out: Path,
                   built: dict[str, Any]) -> dict[str, int]:
    rows = pl.read_parquet(run_dir / dataset_path(condition))
    system = cfg.training_system_prompt()  # the examples as the adapters were trained
    counts = {}
    (out / "data").mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        part = rows.filter(pl.col("split") == split)
        if not part.height:
            continue
        table = pl.DataFrame({
            "id": part["id"], "part": part["part"], "source": part["source"],
            "bracket": part["bracket"],
            "messages": [_messages(r, system) for r in part.iter_rows(named=True)]})
        table.write_parquet(out / "data" / f"{split}-00000-of-00001.parquet")
        counts[split] = part.height
    sources = ({"all": "human (the dataset's own responses)"} if condition == "human"
               else {f"part {k}": s for k, s in part_sources(cfg, condition).items()})
    models = {s.name: {"model": s.model, "revision": s.revision, "backend": s.backend}
              for s in cfg.sources if s.name in sources.values()}
    meta = {"configs": [{"config_name": "default", "data_files": [
        {"split": split, "path": f"data/{split}-*.parquet"} for split in counts]}],
        "tags": ["synth-ray", "synthetic", "instruction-tuning", condition],
        "license": "other"}
    body = f"""
# {cfg.run.name}: training set `{condition}`

The `{condition}` condition of a synth-ray run (how the diversity of synthetic fine-tuning
data changes an LLM; Schaffelder & Gatt, arXiv 2511.01490). Rows: {json.dumps(counts)}.
The licence is that of the instruction data ({cfg.dataset.path}) and the terms of the
models that wrote the answers.

- Answers by: {json.dumps(sources)}
- Models: {json.dumps(models)}
- Generation: system prompt {json.dumps(system)}, sampling
  {json.dumps(cfg.generation.sampling.model_dump())}
- Split: seed {cfg.split.seed}, {cfg.split.num_parts} parts, validation share
  {cfg.split.validation_fraction}
- Build summary: {json.dumps(built.get(condition, {}), default=str)}

Each row's `messages` is the chat the target was trained on (system, user, assistant).
"""
    (out / "README.md").write_text(_card(meta, body))
    return counts


def _eval_numbers(run_dir: Path, target: str, adapter: str, brackets: list[str]
                  ) -> dict[str, Any]:
    """This adapter's perplexity of outputs and harm / quality means, where evaluated."""
    out: dict[str, Any] = {}
    summary = run_dir / score_dir(target) / "summary.json"
    if summary.exists():
        ppl = json.loads(summary.read_text())["perplexity"]["outputs"]["summary"]
        if adapter in ppl:
            out["perplexity_of_outputs_mean"] = ppl[adapter]["mean"]
    zone = run_dir / judge_dir(target) / "danger_zone.parquet"
    if zone.exists():
        # an adapter's own figures: vanilla's and human's first bracket (per-bracket rule)
        rows = first_scope(pl.read_parquet(zone), ["adapter", "prompt_set"], brackets)
        for r in rows.filter(pl.col("adapter") == adapter).iter_rows(named=True):
            out[f"harm_mean_{r['prompt_set']}"] = r["harm_mean"]
            out[f"quality_mean_{r['prompt_set']}"] = r["quality_mean"]
            out[f"danger_share_{r['prompt_set']}"] = r["danger_share"]
    return out


def export_adapter(cfg: ExperimentConfig, run_dir: Path, target, condition: str, seed: int,
                   name: str, out: Path) -> None:
    from synth_ray.train.lora import check_adapter

    src = run_dir / adapter_dir(target.name, name)
    check_adapter(src)  # complete and trained, or this refuses
    out.mkdir(parents=True, exist_ok=True)
    for f in ADAPTER_FILES:
        if (src / f).exists():
            shutil.copy2(src / f, out / f)
    s = json.loads((src / "training_summary.json").read_text())
    evaluation = _eval_numbers(run_dir, target.name, name, list(cfg.brackets()))
    meta = {"base_model": target.model, "library_name": "peft",
            "tags": ["synth-ray", "lora", condition], "datasets": [f"{cfg.run.name}-{condition}"]}
    body = f"""
# {cfg.run.name}: `{target.name}` fine-tuned on `{condition}` (seed {seed})

A LoRA adapter trained by synth-ray on the `{condition}` training set of run
`{cfg.run.name}` (exported beside it as dataset `{cfg.run.name}-{condition}`).

- Base model: {target.model} (revision {target.revision or "default"})
- LoRA: {json.dumps(cfg.lora.model_dump())}
- Training: learning rate {cfg.training.learning_rate}, {cfg.training.scheduler} schedule,
  warm-up {cfg.training.warmup_ratio}, {cfg.training.epochs} epochs, effective batch
  {target.effective_batch_size}, max length {cfg.training.max_length}, loss on
  {cfg.training.loss_on}, seed {seed}, strategy {target.strategy}
- Result: {s["steps"]} optimizer steps, best validation loss {s["best_val_loss"]:.4f} at
  step {s["best_step"]}{" (stopped early)" if s.get("stopped_early") else ""}
- Evaluation: {json.dumps(evaluation) if evaluation else "not evaluated in this run"}

Load: `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{target.model}"),
"<this folder>")`.
"""
    (out / "README.md").write_text(_card(meta, body))


def export_run(run_dir: Path, out: Path) -> dict[str, Any]:
    cfg = run_config(run_dir)  # NotARunDir for a folder that holds no run
    summary = run_dir / DATASETS_SUMMARY
    built = json.loads(summary.read_text()) if summary.exists() else {}
    done: dict[str, Any] = {"run": cfg.run.name, "datasets": {}, "adapters": [],
                            "skipped": []}
    conditions = sorted({c for c, _, _ in adapter_grid(cfg)})
    for condition in conditions:
        if not (run_dir / dataset_path(condition)).exists():
            done["skipped"].append(f"dataset {condition}: not built")
            continue
        done["datasets"][condition] = export_dataset(
            cfg, run_dir, condition, out / "datasets" / condition, built)
    for target in cfg.targets:
        for condition, seed, name in adapter_grid(cfg):
            if not (run_dir / adapter_dir(target.name, name) / "training_summary.json").exists():
                done["skipped"].append(f"adapter {target.name}/{name}: not trained")
                continue
            export_adapter(cfg, run_dir, target, condition, seed, name,
                           out / "adapters" / target.name / name)
            done["adapters"].append(f"{target.name}/{name}")
    return done


def push(out: Path, run_name: str, org: str, api=None) -> list[str]:
    """Upload an export: one private repo per dataset and per adapter. `api` is a
    `huggingface_hub.HfApi` (the default) or anything with its two methods."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    repos = []
    for kind, pattern in (("dataset", "datasets/*"), ("model", "adapters/*/*")):
        for folder in sorted(p for p in out.glob(pattern) if p.is_dir()):
            name = "-".join(folder.relative_to(out).parts[1:])
            repo_id = f"{org}/{run_name}-{name}"
            api.create_repo(repo_id, repo_type=kind, private=True, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=kind,
                              commit_message=f"synth-ray export of run {run_name}")
            repos.append(repo_id)
    return repos
