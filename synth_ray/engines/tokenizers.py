"""The engines' tokenizers in the driver and postprocess workers: loaded once per process,
and the chat prompt as ray.data.llm's chat template stage makes it."""

from __future__ import annotations

import functools
import threading
from typing import Any

_TOKENIZER_LOCK = threading.Lock()


def engine_tokenizer(model: str, trust_remote_code: bool = False):
    """A model's tokenizer, loaded once per process (the driver, a postprocess worker).
    Under a lock: several sources start at once (`generation.parallel_sources`), and
    transformers' lazy imports are not thread-safe (two first imports at once: "cannot
    import name 'AutoTokenizer'")."""
    with _TOKENIZER_LOCK:
        return _load_tokenizer(model, trust_remote_code)


@functools.lru_cache(maxsize=16)
def _load_tokenizer(model: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)


def model_window(model: str, trust_remote_code: bool = False) -> int:
    """A model's own context window: its config's `max_position_embeddings` (the text
    model's, for a config that nests one), the length vLLM derives for it unless rope
    scaling in the config stretches it further. For `generation.max_model_len: model`."""
    with _TOKENIZER_LOCK:  # transformers' lazy imports (see engine_tokenizer)
        return _load_window(model, trust_remote_code)


@functools.lru_cache(maxsize=16)
def _load_window(model: str, trust_remote_code: bool) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "max_position_embeddings", None)
    if not isinstance(window, int) or window < 16:
        raise ValueError(f"{model}: its config states no context window "
                         "(max_position_embeddings); set generation.max_model_len (or the "
                         "model's own engine max_model_len) to a number of tokens")
    return window


def engine_context(generation_len: int | str, engine_kwargs: dict[str, Any], model: str,
                   trust_remote_code: bool = False) -> int:
    """The context of one engine, in tokens: its own `max_model_len`, else the run's
    `generation.max_model_len`, where "model" means the model's own window (model_window)."""
    n = engine_kwargs.get("max_model_len") or generation_len
    return model_window(model, trust_remote_code) if n == "model" else int(n)


def chat_prompt(tokenizer, messages: list[dict[str, Any]]) -> str:
    """The engine's prompt text, as ray.data.llm's chat template stage makes it: a
    generation prompt after a user turn, else the last (assistant) turn continued."""
    add = messages[-1]["role"] == "user"
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add,
                                         continue_final_message=not add)
