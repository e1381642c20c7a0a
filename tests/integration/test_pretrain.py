"""The tiny pre-trained family: a source pre-trained with the project's Ray Train trainer
(full fine-tuning) on this machine's text is not gibberish: its perplexity on paragraphs
held out of pre-training is far below that of the same model before training. The second
request finds it cached, also after the corpus is rebuilt from the same text."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import polars as pl
import pytest

from .helpers import REPO, cli_env

pytestmark = pytest.mark.slow

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from synth_ray.toy import pretrain
pretrain.PRETRAINED["pt-test"] = pretrain.PretrainSpec(
    ("reference",), pretrain.TinySpec(num_hidden_layers=4, seed=7), steps=60)
pretrain.pretrain(["pt-test"])
print("MODEL", pretrain.cached("pt-test"))
print("PROMPTS", pretrain.paragraphs_path())
print("MISSING", pretrain.missing(["pt-test"]))
if len(sys.argv) > 1:  # the model pre-training started from (seeded: the same weights)
    from pathlib import Path
    from synth_ray.toy.tiny import build_model
    build_model(pretrain.PRETRAINED["pt-test"].model, Path(sys.argv[1]),
                pretrain.tokenizer_path(), "pt-test")
"""


def held_out_perplexity(model_dir, rows: list[dict]) -> float:
    """Token-weighted perplexity of the answers given the chat prompt (transformers)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    nll, n = 0.0, 0
    for r in rows:
        prompt = tok.apply_chat_template([{"role": "user", "content": r["instruction"]}],
                                         add_generation_prompt=True, return_dict=False)
        answer = tok(r["response"], add_special_tokens=False)["input_ids"][:120]
        ids = torch.tensor([list(prompt) + answer])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1:-1]
        lp = torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt):, None])
        nll -= lp.sum().item()
        n += len(answer)
    return math.exp(nll / n)


def test_pretrained_source_is_far_from_gibberish(tmp_path) -> None:
    env = cli_env(SYNTH_RAY_CACHE=str(tmp_path / "cache"))
    init = tmp_path / "init"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(init)], capture_output=True,
                          text=True, timeout=900, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
               if line.startswith(("MODEL", "PROMPTS", "MISSING")))
    model = out["MODEL"]
    assert out["MISSING"] == "[]"
    summary = json.loads((tmp_path / "cache" / model.rsplit("/", 1)[-1] /
                          "training_summary.json").read_text())
    assert summary["steps"] == 60 and summary["condition"] == "pretrain"  # exactly
    # progress as the stages show it: steps of each model (a plain line off a terminal)
    assert "[tiny] pretrain-pt-test: 60/60 steps" in proc.stderr, proc.stderr[-3000:]
    # its checkpoints went once the model was cached (the Tune folder beside them stays)
    assert not list((tmp_path / "cache" / "pretrain-work").glob("pt-test-*"))
    assert (tmp_path / "cache" / "pretrain-work" / "ray_tune").is_dir()

    prompts = pl.read_ndjson(out["PROMPTS"])
    held = prompts.filter(pl.col("category") == "reference").head(40).to_dicts()
    rows = pl.read_parquet(next((tmp_path / "cache").glob("corpus-*/rows.parquet")))
    seen = set(rows.filter(~pl.col("held_out"))["response"])
    assert held and not seen & {r["response"] for r in held}  # never trained on
    trained, random = held_out_perplexity(model, held), held_out_perplexity(init, held)
    print(f"held-out perplexity: pre-trained {trained:.1f}, same model untrained {random:.1f} "
          f"(vocabulary {4096}), ratio {trained / random:.3f}")
    assert trained < random / 5  # 60 steps here; the demo family trains 200

    # the second request is a cache hit: nothing is trained again, even when the corpus is
    # read anew (a fresh .venv's files have new mtimes): the models are keyed by its text
    import shutil

    shutil.rmtree(next((tmp_path / "cache").glob("corpus-*")))
    again = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                           timeout=300, env=env, cwd=REPO)
    assert again.returncode == 0 and "pre-training" not in again.stderr
    assert f"MODEL {model}" in again.stdout
    assert next((tmp_path / "cache").glob("corpus-*/rows.parquet")).exists()  # rebuilt
