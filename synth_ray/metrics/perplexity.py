"""Perplexity of responses under a scoring model (PAPER.md, Evaluation 2).

Per sample: exp of the mean negative log-likelihood of the *response tokens only*, with the
chat template (system, user, assistant header) as context. The response is tokenized after
the templated prompt, exactly as in training (`train.data.encode_example`) and inference; the
end-of-turn token is counted only with `evaluation.perplexity.end_of_turn` (the paper's text
scores the text; the authors' code scores the final end-of-turn token too).

Two paths that must agree: vLLM prompt log-probs (`SamplingParams(max_tokens=1,
prompt_logprobs=0)`, used at scale through ray.data.llm) and a transformers forward pass
(for checking, and for machines without vLLM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def token_spans(tokenizer: Any, messages: list[dict[str, str]], response: str,
                end_of_turn: bool = False) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) for a chat prompt and its response. `end_of_turn`: the
    token the chat template closes the assistant turn with follows the response and is
    scored too (the authors' perplexity counts Llama-3's final <|eot_id|>)."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if end_of_turn and response_ids:
        response_ids = response_ids + end_of_turn_ids(tokenizer, messages, prompt, response)
    return prompt_ids, response_ids


def end_of_turn_ids(tokenizer: Any, messages: list[dict[str, str]], prompt: str,
                    response: str) -> list[int]:
    """The first token the chat template writes after an assistant response."""
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt + response) or len(full) == len(prompt + response):
        raise ValueError("evaluation.perplexity.end_of_turn: this chat template does not "
                         "write the response verbatim after the prompt, then an end-of-turn "
                         "token; set end_of_turn: false for this model")
    return tokenizer(full[len(prompt + response):], add_special_tokens=False)["input_ids"][:1]


def perplexity(logprobs: Sequence[float]) -> float:
    """exp(-mean log p) over the response tokens; NaN for an empty response."""
    if not len(logprobs):
        return float("nan")
    return math.exp(-sum(logprobs) / len(logprobs))


def response_logprobs_from_vllm(prompt_logprobs: Sequence[Any], token_ids: Sequence[int],
                                start: int) -> list[float]:
    """Log-probs of tokens[start:] from vLLM's prompt_logprobs (one entry per prompt token,
    None for the first; each maps token id -> logprob, possibly under a str key after a
    round trip through Arrow/JSON)."""
    out = []
    for pos in range(start, len(token_ids)):
        entry = prompt_logprobs[pos]
        tok = token_ids[pos]
        lp = entry.get(tok, entry.get(str(tok))) if isinstance(entry, dict) else None
        if lp is None:
            raise ValueError(f"no prompt log-prob for token {tok} at position {pos}")
        out.append(float(lp["logprob"] if isinstance(lp, dict) else getattr(lp, "logprob", lp)))
    return out


@torch.no_grad()
def hf_response_logprobs(model: Any, prompt_ids: list[int],
                         response_ids: list[int]) -> list[float]:
    """Log-probs of the response tokens under a transformers causal LM, one forward pass."""
    ids = torch.tensor([prompt_ids + response_ids], device=model.device)
    logits = model(ids).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    targets = ids[0, 1:]
    per_token = logp.gather(1, targets[:, None])[:, 0]
    return per_token[len(prompt_ids) - 1:].tolist()


def hf_perplexities(model: Any, tokenizer: Any,
                    items: Sequence[tuple[list[dict[str, str]], str]],
                    end_of_turn: bool = False) -> list[float]:
    out = []
    for messages, response in items:
        p, r = token_spans(tokenizer, messages, response, end_of_turn)
        out.append(perplexity(hf_response_logprobs(model, p, r)) if r else float("nan"))
    return out
