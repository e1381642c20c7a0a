"""The tiny *pre-trained* family: small Llama LMs trained from scratch, on this machine, on
real text it already carries (`synth_ray/toy/corpora.py`), so that the demo's sources differ
the way real LLMs do and its report shows the paper's direction instead of noise.

Two bracket-like families (`FAMILY`):
- `corpora`: each source learns a *different* corpus (the easy version of the claim);
- `mixture`: every source learns the *same* mixture and differs only in seed or size (the
  faithful analogue of LLMs trained on overlapping web data: the subtle version).
The target learns the mixture too, under its own seed. All share one byte-level BPE
tokenizer trained on the mixture.

Pre-training is the project's own trainer (`synth_ray/train/worker.py`) under Ray Train,
with full fine-tuning instead of LoRA, every model the same number of optimizer steps
(equal steps, not equal time: an under-trained source writes gibberish that would score as
"diverse"). Models are cached by a hash of their spec, the tokenizer and the corpus text, so
a second `make demo` skips this. The prompts of `tiny://paragraphs` are paragraphs held out
of every model's pre-training: the first sentence is the instruction, the rest the human
answer.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from synth_ray.models import cache_root
from synth_ray.runtime.rundir import hash_file, hash_json, write_parquet
from synth_ray.toy import corpora
from synth_ray.toy.tiny import TinySpec

log = logging.getLogger("synth_ray")

PRETRAIN_VERSION = 1  # bump when the recipe changes, so caches rebuild
PROMPTS_PER_CORPUS = 80  # held out of pre-training for tiny://paragraphs
VOCAB = 4096
MIX = tuple(corpora.CORPORA)


@dataclass(frozen=True)
class PretrainSpec:
    corpora: tuple[str, ...]
    model: TinySpec  # shape and initialisation seed (also the training seed)
    steps: int = 200
    batch_size: int = 16
    learning_rate: float = 3e-3
    max_length: int = 160


def _shape(seed: int, **wider: int) -> TinySpec:
    return TinySpec(num_hidden_layers=4, seed=seed, **wider)


PRETRAINED: dict[str, PretrainSpec] = {
    "pt-reference": PretrainSpec(("reference",), _shape(1)),
    "pt-docstrings": PretrainSpec(("docstrings",), _shape(2)),
    "pt-licenses": PretrainSpec(("licenses",), _shape(3)),
    "pt-mix-a": PretrainSpec(MIX, _shape(11)),
    "pt-mix-b": PretrainSpec(MIX, _shape(12)),
    "pt-mix-c": PretrainSpec(MIX, _shape(13, hidden_size=320, intermediate_size=640,
                                         num_attention_heads=5, num_key_value_heads=1)),
    "pt-target": PretrainSpec(MIX, _shape(100)),
}  # fmt: skip
FAMILY = {"corpora": ["pt-reference", "pt-docstrings", "pt-licenses"],
          "mixture": ["pt-mix-a", "pt-mix-b", "pt-mix-c"]}


# -- the text ------------------------------------------------------------------------------


@functools.cache  # stats ~2,000 files; every model key and cache lookup asks for it
def corpus_fingerprint() -> str:
    """Cheap key of the corpus inputs (the standard library's files' paths, sizes and mtimes,
    the shipped licence text; the Python version), so the corpora are read once per
    machine, not once per process. Nothing of site-packages: installing a package moves
    neither this nor the corpus."""
    files = [*corpora._stdlib_files(), corpora.LICENSES]
    stats = []
    for f in files:
        try:
            st = f.stat()
            stats.append((str(f), st.st_size, int(st.st_mtime)))
        except OSError:
            continue
    return hash_json({"v": PRETRAIN_VERSION, "python": sys.version, "files": stats,
                      "min": corpora.MIN_CHARS, "max": corpora.MAX_CHARS,
                      "prompts": PROMPTS_PER_CORPUS})


def build_corpus(folder: Path) -> None:
    """rows.parquet: every corpus row, with `held_out` marking the demo's prompts (the
    first PROMPTS_PER_CORPUS prose rows of each corpus by hash rank, at most 30% of them)."""
    frames = []
    for name in corpora.CORPORA:
        rows = corpora.corpus_rows(name)
        prose = sorted((r for r in rows if r["prose"]), key=corpora.rank)
        keep = min(PROMPTS_PER_CORPUS, int(0.3 * len(prose)))
        held = {corpora.rank(r) for r in prose[:keep]}
        frames.append(pl.DataFrame([{**r, "held_out": corpora.rank(r) in held,
                                     "id": corpora.rank(r)[:16]} for r in rows]))
        log.info("[tiny] corpus %s: %d rows (%d prose, %d held out as prompts)", name,
                 len(rows), len(prose), keep)
    write_parquet(pl.concat(frames), folder / "rows.parquet")
    held = pl.concat(frames).filter(pl.col("held_out"))
    lines = [json.dumps({"id": r["id"], "instruction": r["instruction"], "context": "",
                         "response": r["response"], "category": r["category"]})
             for r in held.sort("id").iter_rows(named=True)]
    (folder / "paragraphs.jsonl").write_text("\n".join(lines) + "\n")


def corpus_path() -> Path:
    from synth_ray.toy.tiny import build_in_place

    return build_in_place(cache_root() / f"corpus-{corpus_fingerprint()}", build_corpus)


@functools.cache
def corpus_key() -> str:
    """What the tokenizer and the models learn from: the corpus rows' text, not the
    fingerprint of the files it was read from, nor the parquet file's bytes (which carry the
    polars version). A fresh clone's .venv (new mtimes) or a polars upgrade rebuilds the
    corpus in seconds, and the models stay cached when it came out the same text."""
    folder = corpus_path()
    rows = pl.read_parquet(folder / "rows.parquet").sort("category", "id")
    return hash_json({"rows": rows.select("id", "instruction", "response", "category",
                                          "prose", "held_out").rows(),
                      "paragraphs": hash_file(folder / "paragraphs.jsonl")})


def paragraphs_path() -> Path:
    """The demo's Dolly-style prompts: paragraphs no pre-trained model has seen."""
    return corpus_path() / "paragraphs.jsonl"


def training_rows(names: tuple[str, ...]) -> pl.DataFrame:
    """A model's pre-training text: every row of its corpus but the held-out ones; a
    mixture takes the same number of rows from each corpus (the smallest one's count)."""
    rows = pl.read_parquet(corpus_path() / "rows.parquet").filter(~pl.col("held_out"))
    parts = [rows.filter(pl.col("category") == n).sort("id") for n in names]
    if len(parts) > 1:
        n = min(p.height for p in parts)
        parts = [p.head(n) for p in parts]
    return pl.concat(parts)


# -- the tokenizer --------------------------------------------------------------------------


def tokenizer_key() -> str:
    from synth_ray.toy.tiny import CHAT_TEMPLATE, SPECIAL

    return hash_json({"v": PRETRAIN_VERSION, "vocab": VOCAB, "corpus": corpus_key(),
                      "template": CHAT_TEMPLATE, "special": SPECIAL})


def tokenizer_path() -> Path:
    from synth_ray.toy.tiny import build_in_place, build_tokenizer

    def build(folder: Path) -> None:
        text = training_rows(MIX)
        build_tokenizer(folder, (f"{a}\n{b}" for a, b in text.select("instruction", "response")
                                 .iter_rows()), VOCAB)

    return build_in_place(cache_root() / f"pt-tokenizer-{tokenizer_key()}", build)


# -- the models -----------------------------------------------------------------------------


@functools.cache
def autocast() -> str:
    """bf16 mixed precision where the CPU computes bf16 natively (AVX-512 BF16 or AMX: the
    steps take half the time, benchmarks/pretrain_speed.py), fp32 elsewhere, where
    emulated bf16 would be slower. Part of the cache key: the weights differ."""
    import torch

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native else "none"


def model_key(name: str) -> str:
    from synth_ray.train import worker

    return hash_json({"spec": asdict(PRETRAINED[name]), "tokenizer": tokenizer_key(),
                      "trainer": worker.FULL_VERSION, "autocast": autocast()})


def cached(name: str) -> Path:
    return cache_root() / f"model-{name}-{model_key(name)}"


def _job(name: str, work: Path, cpus: int) -> dict[str, Any]:
    """A Ray Train job for the project's trainer: full fine-tuning of a random-initialised
    model on its corpus for exactly `spec.steps` optimizer steps."""
    from synth_ray.config import ExperimentConfig
    from synth_ray.toy.tiny import build_model

    spec = PRETRAINED[name]
    work.mkdir(parents=True, exist_ok=True)
    init = work / "init"
    if not (init / "config.json").exists():
        build_model(spec.model, init, tokenizer_path(), name)
    rows = training_rows(spec.corpora).with_columns(split=pl.lit("train"))
    val = rows.filter(pl.col("id").str.slice(0, 1) == "0").head(64)  # 1/16, by hash
    rows = pl.concat([rows.join(val.select("id"), on="id", how="anti"),
                      val.with_columns(split=pl.lit("validation"))])
    data = work / "rows.parquet"
    write_parquet(rows.select("id", "instruction", "response", "split")
                  .with_columns(context=pl.lit("")), data)
    cfg = ExperimentConfig.model_validate({
        "run": {"name": f"pretrain-{name}", "dir": str(work)},
        "sources": [], "targets": [{
            "name": name, "model": str(init), "num_workers": 1, "cpus_per_worker": cpus,
            "per_device_batch_size": spec.batch_size,
            "effective_batch_size": spec.batch_size}],
        "conditions": {"human": True},
        "training": {
            "learning_rate": spec.learning_rate, "max_steps": spec.steps,
            "warmup_ratio": 0.05, "weight_decay": 0.0, "max_length": spec.max_length,
            "loss_on": "all", "dtype": "float32", "autocast": autocast(),
            "eval_every_steps": spec.steps // 4,
            "report_every_steps": 25, "early_stopping_patience": 100,
            # the recipe the cached models were trained with (FULL_VERSION 2): padded
            # batches, the model's own loss
            "padding_free": False, "loss_chunk_tokens": None,
            "seeds": [spec.model.seed]},
    })
    return {"config": cfg.model_dump(mode="json"), "target": name, "condition": "pretrain",
            "seed": spec.model.seed, "dataset": str(data), "model_path": str(init),
            "output": str(cached(name)), "run_name": f"pretrain-{name}",
            "storage": str(work / "ray_train"), "full": True}


def missing(names: list[str]) -> list[str]:
    return [n for n in dict.fromkeys(names) if not (cached(n) / "model.safetensors").exists()]


def drop_work(jobs: list[dict[str, Any]]) -> None:
    """Delete each finished job's work folder (its rows and Ray Train checkpoints: about 4 GB
    for a SmolLM2 variant, whose optimizer state is twice the weights). A job whose model is
    not in the cache yet keeps its folder, so a killed build still resumes from it."""
    import shutil

    for j in jobs:
        if (Path(j["output"]) / "model.safetensors").exists():
            shutil.rmtree(Path(j["storage"]).parent, ignore_errors=True)


def pretrain(names: list[str], parallel: int = 2) -> None:
    """Pre-train every named model that is not cached yet, as Ray Tune trials of the
    project's Ray Train trainer (`parallel` at a time, the machine's CPUs split among
    them). A killed run resumes from its checkpoints (kept under the cache's work folder until
    the model is cached)."""
    import ray

    from synth_ray.config import ResourcesSection
    from synth_ray.runtime.cluster import ensure_ray
    from synth_ray.train.board import watch_steps
    from synth_ray.train.driver import run_trials, train_run

    todo = missing(names)
    if not todo:
        return
    if not ray.is_initialized():
        ensure_ray(ResourcesSection())
    corpus_path()
    tokenizer_path()
    cpus = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)) // parallel)
    work = cache_root() / "pretrain-work"
    jobs = [_job(n, work / f"{n}-{model_key(n)}", cpus) for n in todo]
    log.info("[tiny] pre-training %d tiny model(s) on this machine's text (%s), %d steps "
             "each, %d at a time; cached for later runs under %s", len(todo), ", ".join(todo),
             PRETRAINED[todo[0]].steps, parallel, cache_root())
    # steps and ETA per model as the stages show theirs (a plain line every 30 s off a
    # terminal): the first `make demo` spends most of its time here
    with watch_steps(stage="tiny") as board:
        for j in jobs:
            j["board"] = board
        run_trials([train_run([j]) for j in jobs], work / "ray_tune", "pretrain", parallel)
    drop_work(jobs)
    for j in jobs:
        s = json.loads((Path(j["output"]) / "training_summary.json").read_text())
        log.info("[tiny] %s: %d steps, validation perplexity %.1f (a random model: ~%d)",
                 j["target"], s["steps"], math.exp(s["best_val_loss"]), VOCAB)


def ensure_pretrained(names: list[str]) -> None:
    """Pre-train the missing ones in a child process (`synth-ray tiny NAME...`), with a Ray
    instance of its own (or the cluster's, under `ray job submit`): Ray Train leaves a CPU
    reserved in the calling driver's local instance after a Tune run (seen with ray 2.60),
    which would starve the engines of the stages that follow."""
    todo = missing(names)
    if not todo:
        return
    code = build_in_child(todo)
    if code != 0 or missing(todo):
        raise RuntimeError(f"pre-training {', '.join(todo)} failed (exit code "
                           f"{code}); run again to resume from its checkpoints")


def build_in_child(names: list[str]) -> int:
    """`synth-ray tiny NAME...` in a child process (pre-trained models, SmolLM2 variants):
    its progress on the terminal, its libraries' noise in the run's log
    (`terminal.child_terminal`). Returns its exit code."""
    import subprocess

    from synth_ray.observe.terminal import child_terminal

    env, fds = child_terminal()
    return subprocess.run([sys.executable, "-m", "synth_ray.cli", "tiny", *names],
                          env={**os.environ, **env}, pass_fds=fds).returncode
