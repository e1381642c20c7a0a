"""The embedded default: tiny Llama-architecture models and a BPE tokenizer, made offline.

`tiny://NAME` in a config (a source's, target's or judge's `model`) resolves (through the
registry in `synth_ray.models`, `toy/registry.py`) to a folder that this module builds once
and caches by content hash under `$SYNTH_RAY_CACHE` (default `~/.cache/synth-ray`). The
tokenizer is trained on the bundled sample's text with the `tokenizers` library and carries
a Llama-3-style chat template, so every stage runs on a CPU with no model hub. The weights
are random (seeded): the plumbing config proves the plumbing; its numbers are noise. Shapes
keep head_dim 64, the smallest vLLM's CPU attention accepts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from synth_ray.models import cache_root
from synth_ray.runtime.rundir import hash_file, hash_json

SPECIAL = {
    "bos": "<|begin_of_text|>",
    "eos": "<|end_of_text|>",
    "start_header": "<|start_header_id|>",
    "end_header": "<|end_header_id|>",
    "eot": "<|eot_id|>",
    "pad": "<|pad|>",
}
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
TOKENIZER_VOCAB = 2048
TOKENIZER_VERSION = 1  # bump when the tokenizer recipe changes, so caches rebuild


@dataclass(frozen=True)
class TinySpec:
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    seed: int = 0


# Sources of two sizes and four seeds stand for the brackets; the target and judge are
# separate models so that no stage ever scores its own weights by accident.
MODELS: dict[str, TinySpec] = {
    **{f"small-{c}": TinySpec(seed=i) for i, c in enumerate("abcd", start=1)},
    **{
        f"medium-{c}": TinySpec(
            hidden_size=384, intermediate_size=768, num_attention_heads=6,
            num_key_value_heads=2, num_hidden_layers=3, seed=10 + i,
        )
        for i, c in enumerate("abcd", start=1)
    },
    "target": TinySpec(seed=100),
    "judge": TinySpec(seed=200),
}  # fmt: skip

SAMPLE_DIR = Path(__file__).parent / "sample"
DOLLY_SAMPLE = SAMPLE_DIR / "dolly_sample.jsonl"
# tiny://NAME -> a bundled file (the Dolly-style sample, the safety and SPB inputs)
SAMPLE_FILES = {
    "dolly-sample": DOLLY_SAMPLE,
    "safety-prompts": SAMPLE_DIR / "safety_prompts.jsonl",
    "jailbreak-templates": SAMPLE_DIR / "jailbreak_templates.jsonl",
    "articles": SAMPLE_DIR / "articles.jsonl",
}


def _corpus() -> list[str]:
    rows = [json.loads(line) for line in DOLLY_SAMPLE.read_text().splitlines()]
    return [f"{r['instruction']}\n{r['context']}\n{r['response']}" for r in rows]


def build_in_place(target: Path, build) -> Path:
    """Build into a temp folder beside `target`, then rename: a half-built model never shows."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def tokenizer_key() -> str:
    return hash_json(
        {"v": TOKENIZER_VERSION, "vocab": TOKENIZER_VOCAB, "corpus": hash_file(
            DOLLY_SAMPLE), "template": CHAT_TEMPLATE, "special": SPECIAL}
    )


def build_tokenizer(folder: Path, corpus=None, vocab: int = TOKENIZER_VOCAB) -> None:
    """A byte-level BPE tokenizer with the Llama-3-style chat template, trained on `corpus`
    (an iterable of texts; the bundled sample by default)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() if corpus is None else corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eot"],  # a chat turn ends at <|eot_id|>, as in Llama-3-Instruct
        pad_token=SPECIAL["pad"],
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)


def tokenizer_path() -> Path:
    return build_in_place(cache_root() / f"tokenizer-{tokenizer_key()}", build_tokenizer)


def build_model(spec: TinySpec, folder: Path, tokenizer: Path, name: str) -> None:
    """A random-initialised (seeded) Llama of `spec`'s shape with `tokenizer`, saved as
    safetensors."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    (folder / "synth_ray_tiny.json").write_text(
        json.dumps({"name": name, "spec": asdict(spec)}, indent=2)
    )


def random_model_path(name: str) -> Path:
    """The folder of the random-weight model `name` (one of MODELS), built once."""
    key = hash_json({"spec": asdict(MODELS[name]), "tokenizer": tokenizer_key()})
    return build_in_place(
        cache_root() / f"model-{name}-{key}",
        lambda folder: build_model(MODELS[name], folder, tokenizer_path(), name))
