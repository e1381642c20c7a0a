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


def chat_prompt(tokenizer, messages: list[dict[str, Any]]) -> str:
    """The engine's prompt text, as ray.data.llm's chat template stage makes it: a
    generation prompt after a user turn, else the last (assistant) turn continued."""
    add = messages[-1]["role"] == "user"
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add,
                                         continue_final_message=not add)
