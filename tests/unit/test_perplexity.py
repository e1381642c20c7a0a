"""Perplexity of response tokens only, against transformers' own masked loss."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from synth_ray import models
from synth_ray.metrics.perplexity import (
    hf_perplexities,
    hf_response_logprobs,
    perplexity,
    response_logprobs_from_vllm,
    token_spans,
)
from synth_ray.prompts import chat_messages


@pytest.fixture(scope="module")
def model_tok():
    path = models.resolve_model("tiny://target")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), \
        AutoTokenizer.from_pretrained(path)


def test_equals_transformers_masked_loss(model_tok) -> None:
    model, tok = model_tok
    msgs = chat_messages("Explain lists.", "", "You are a helpful assistant.")
    p, r = token_spans(tok, msgs, "A list holds items in order.")
    ids = torch.tensor([p + r])
    labels = ids.clone()
    labels[0, : len(p)] = -100  # transformers ignores these in its loss
    with torch.no_grad():
        loss = model(ids, labels=labels).loss.item()
    assert perplexity(hf_response_logprobs(model, p, r)) == pytest.approx(math.exp(loss),
                                                                          rel=1e-5)
    # the prompt is context only: changing it changes the score, not the tokens counted
    assert len(hf_response_logprobs(model, p, r)) == len(r)


def test_uniform_model_has_perplexity_equal_to_vocab_size(model_tok) -> None:
    _, tok = model_tok
    model = AutoModelForCausalLM.from_pretrained(models.resolve_model("tiny://target"))
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every next-token distribution is uniform
    items = [(chat_messages("Hi", "", None), "Hello there, friend.")]
    assert hf_perplexities(model, tok, items)[0] == pytest.approx(model.config.vocab_size,
                                                                  rel=1e-5)
    assert math.isnan(hf_perplexities(model, tok, [(items[0][0], "")])[0])


def test_vllm_prompt_logprobs_extraction() -> None:
    tokens = [5, 6, 7, 8]
    plp = [None, {6: {"logprob": -1.0}}, {"7": {"logprob": -2.0}, "9": {"logprob": -0.1}},
           {8: -3.0}]
    assert response_logprobs_from_vllm(plp, tokens, 2) == [-2.0, -3.0]
    with pytest.raises(ValueError, match="token 8"):
        response_logprobs_from_vllm([None, None, None, {1: -1.0}], tokens, 3)


def test_end_of_turn_scores_the_token_that_closes_the_turn(model_tok) -> None:
    """`evaluation.perplexity.end_of_turn` (the authors' code): the response's tokens, then
    the one the chat template closes the assistant turn with, as in the whole templated
    conversation."""
    model, tok = model_tok
    msgs = chat_messages("Explain lists.", "", "You are a helpful assistant.")
    text = "A list holds items in order."
    p, r = token_spans(tok, msgs, text)
    p2, r2 = token_spans(tok, msgs, text, end_of_turn=True)
    assert p2 == p and r2[:-1] == r and len(r2) == len(r) + 1
    whole = tok.apply_chat_template([*msgs, {"role": "assistant", "content": text}],
                                    tokenize=False)
    ids = tok(whole, add_special_tokens=False)["input_ids"]
    assert ids[:len(p2 + r2)] == p2 + r2
    assert tok.convert_ids_to_tokens(r2[-1]) in whole[len(tok.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True)) + len(text):]
    assert r2[-1] in tok.all_special_ids  # the end-of-turn marker, not text
    assert len(hf_response_logprobs(model, p2, r2)) == len(r) + 1
    assert hf_perplexities(model, tok, [(msgs, text)], end_of_turn=True)[0] == pytest.approx(
        perplexity(hf_response_logprobs(model, p2, r2)))
