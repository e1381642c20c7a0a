"""The causal-LM loss of a micro-batch, without fp32 logits for all of it.

transformers computes `lm_head` over every position and upcasts the logits to fp32 before
the cross-entropy: at Llama-3's 128k vocabulary a micro-batch of 4 x 1,024 tokens holds
~2 GiB of fp32 logits plus their gradient. Here the model returns its last hidden states
(`lm_head` is swapped for an identity during the forward), only the positions that have a
target are kept (with loss on the response, the prompt's logits are never made), and the
logits and loss are computed `chunk` tokens at a time under activation checkpointing, so at
most one chunk's logits exist, in the forward and again in the backward. The maths is
transformers' `ForCausalLMLoss`: sum of -log p(target) over targets / number of targets.

Used where `lm_head` is frozen (LoRA) and not partitioned (DDP, not ZeRO-3); elsewhere the
caller uses the model's own loss and says so (`recipe.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own idiom
from torch.utils.checkpoint import checkpoint

IGNORE = -100


@contextlib.contextmanager
def hidden_states_out(model: Any) -> Iterator[torch.nn.Module]:
    """While inside, the model's forward returns its last hidden states as `logits`; yields
    the real `lm_head` (of a PEFT-, DDP- or DeepSpeed-wrapped causal LM)."""
    inner = model
    while hasattr(inner, "module"):  # DDP / DeepSpeed engine
        inner = inner.module
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        inner.set_output_embeddings(head)


def _ce_sum(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor,
                          chunk: int) -> tuple[torch.Tensor, int]:
    """(mean loss over targets, number of targets) for hidden states (B, T, H) and labels
    (B, T): position t predicts labels[t + 1], -100 is no target."""
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    y = labels[:, 1:].reshape(-1)
    keep = (y != IGNORE).nonzero().squeeze(-1)
    h, y = h.index_select(0, keep), y.index_select(0, keep)
    n = int(y.numel())
    if n == 0:  # as transformers: a zero loss that still reaches the graph
        return hidden.sum() * 0.0, 0
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, n, chunk):
        total = total + checkpoint(_ce_sum, h[s:s + chunk], head.weight, head.bias,
                                   y[s:s + chunk], use_reentrant=False)
    return total / n, n


def micro_batch_loss(model: Any, batch: dict[str, torch.Tensor],
                     chunk: int | None) -> torch.Tensor:
    """The loss of one micro-batch: the model's own (`chunk` None) or chunked."""
    # no KV cache in training; and transformers sees padding-free sequences (position_ids,
    # no attention mask) only when there is none
    if not chunk:
        return model(**batch, use_cache=False).loss
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with hidden_states_out(model) as head:
        hidden = model(**inputs, use_cache=False).logits
    loss, _ = chunked_cross_entropy(hidden, head, batch["labels"], chunk)
    return loss
