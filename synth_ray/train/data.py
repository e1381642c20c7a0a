"""Training examples: chat-formatted, tokenized, with labels for the loss.

The prompt (system + user turn, generation prompt) is tokenized exactly as an inference
engine will see it, and the response tokens plus end-of-turn follow; with
`loss_on="response"` prompt tokens get label -100 (ignored), with `"all"` the whole chat
text is learned (the authors' choice, PAPER.md). No Ray here: importable on any machine.
"""

from __future__ import annotations

from typing import Any

import torch

from synth_ray.prompts import chat_messages

IGNORE = -100


def encode_example(tokenizer: Any, instruction: str, context: str, response: str,
                   system_prompt: str | None, max_length: int,
                   loss_on: str = "response") -> dict[str, list[int]]:
    messages = chat_messages(instruction, context, system_prompt)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids + [tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[:max_length]
    if loss_on == "response":
        labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    else:
        labels = list(ids)
    return {"input_ids": ids, "labels": labels}


def encode_rows(tokenizer: Any, rows: list[dict[str, Any]], system_prompt: str | None,
                max_length: int, loss_on: str) -> list[dict[str, list[int]]]:
    out = []
    for r in rows:
        ex = encode_example(tokenizer, r["instruction"], r["context"], r["response"],
                            system_prompt, max_length, loss_on)
        if any(label != IGNORE for label in ex["labels"]):  # a prompt past max_length: no loss
            out.append(ex)
    return out


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked out of attention and loss."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
