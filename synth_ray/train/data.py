"""Training examples: chat-formatted, tokenized, with labels for the loss.

The prompt (system + user turn, generation prompt) is tokenized exactly as an inference
engine will see it, and the response tokens plus end-of-turn follow; with
`loss_on="response"` prompt tokens get label -100 (ignored), with `"all"` the whole chat
text is learned (the authors' choice, PAPER.md). No Ray here: importable on any machine.
"""

from __future__ import annotations

import math
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


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens of a micro-batch, padded or padding-free."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def length_grouped_order(lengths: list[int], batch_size: int, seed: int,
                         mega: int = 50) -> list[int]:
    """A seeded shuffle in which each run of `batch_size` indices has similar lengths (less
    padding, and shorter attention blocks padding-free): shuffle, cut into megabatches of
    `mega` batches, sort each megabatch by length (longest first), as transformers'
    `group_by_length` does. It changes which examples share a step, not which are seen."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist()
    size = batch_size * mega
    out: list[int] = []
    for s in range(0, len(order), size):
        out += sorted(order[s:s + size], key=lambda i: -lengths[i])
    return out


class LengthGroupedSampler(torch.utils.data.Sampler):
    """`DistributedSampler`'s contract (`set_epoch`, one shard per rank, equal shard sizes)
    over `length_grouped_order`: every rank's k-th micro-batch comes from the same
    length-sorted stretch, so ranks finish a step at about the same time."""

    def __init__(self, lengths: list[int], batch_size: int, num_replicas: int, rank: int,
                 seed: int):
        self.lengths, self.batch_size = lengths, batch_size
        self.world, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(lengths) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        order = length_grouped_order(self.lengths, self.batch_size * self.world,
                                     self.seed + self.epoch)
        order += order[: self.num_samples * self.world - len(order)]  # pad as DDP does
        # interleaved like DistributedSampler: rank r's k-th micro-batch and every other
        # rank's come from the same stretch of world x batch similar lengths
        return iter(order[self.rank::self.world])


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
