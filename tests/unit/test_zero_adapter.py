"""The vanilla target's all-zero adapter is built from the model's config alone
(`engines/adapters.zero_adapter`): for a small real model it is, byte for byte, the adapter
PEFT makes on the loaded model; for a 70B-shaped config with no weights beside it, it is
built without reading any, in the memory of the adapter itself."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from synth_ray.config.sections import LoRASection
from synth_ray.engines.adapters import zero_adapter
from synth_ray.models import resolve_model
from synth_ray.train.lora import ADAPTER_FILE, peft_config

# Llama-3.3-70B-Instruct's config.json (its published shape; no weights anywhere)
LLAMA_70B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 8192, "initializer_range": 0.02,
    "intermediate_size": 28672, "max_position_embeddings": 131072, "mlp_bias": False,
    "model_type": "llama", "num_attention_heads": 64, "num_hidden_layers": 80,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "use_cache": True, "vocab_size": 128256}


def test_zero_adapter_is_the_one_peft_makes_on_the_loaded_model(tmp_path) -> None:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model, lora = resolve_model("tiny://target"), LoRASection()
    torch.manual_seed(0)
    loaded = get_peft_model(AutoModelForCausalLM.from_pretrained(model), peft_config(lora))
    loaded.save_pretrained(tmp_path / "loaded", safe_serialization=True)
    torch.manual_seed(1)  # zero_adapter seeds itself
    zero_adapter(model, lora, tmp_path / "meta")
    want = (tmp_path / "loaded" / ADAPTER_FILE).read_bytes()
    assert (tmp_path / "meta" / ADAPTER_FILE).read_bytes() == want
    assert (json.loads((tmp_path / "meta" / "adapter_config.json").read_text())
            == json.loads((tmp_path / "loaded" / "adapter_config.json").read_text()))
    tensors = load_file(tmp_path / "meta" / ADAPTER_FILE)
    b = [t for k, t in tensors.items() if "lora_B" in k]
    assert b and all(not t.any() for t in b)  # B = 0: the base model's own outputs


MEASURE = """
import json, resource, sys
from pathlib import Path
import torch, peft, transformers  # the libraries' own memory counts before, not in the build
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM
from synth_ray.config.sections import LoRASection
from synth_ray.engines.adapters import zero_adapter
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
zero_adapter(sys.argv[1], LoRASection(), Path(sys.argv[2]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "peak": peak}))
"""


def test_zero_adapter_of_a_70b_config_reads_no_weights(tmp_path) -> None:
    """~131 GiB of bf16 weights in the model; the adapter (PEFT's float32 LoRA matrices, r
    16 on the 7 projections of 80 layers) is 0.83 GB: the build needs no more than that
    beyond the libraries it imports (~0.6 GB of torch, transformers and PEFT)."""
    model = tmp_path / "llama-70b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_70B))
    out = tmp_path / "adapter"
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(model), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    size = (out / ADAPTER_FILE).stat().st_size
    r, layers = 16, 80
    a = r * (6 * 8192 + 28672)  # A: r x in_features (q k v o gate up: 8192; down: 28672)
    b = r * (2 * 8192 + 2 * 1024 + 2 * 28672 + 8192)  # B: out_features x r
    assert size > layers * (a + b) * 4  # every matrix, in float32
    assert mem["peak"] - mem["before"] < 2**30, mem
    assert mem["peak"] - mem["before"] < 1.2 * size, (mem, size)
