"""Padding-free micro-batches: a micro-batch's sequences laid end to end in one row, each
attending only to itself, so no padding is computed and the maths of every example is the
padded batch's (`tests/unit/test_padding_free.py` checks loss and LoRA gradients).

transformers keeps packed sequences apart from `position_ids` alone when no attention mask
and no KV cache is given (`masking_utils.find_packed_sequence_indices`: a block-diagonal
mask for SDPA, eager and flex attention; variable-length kernels for flash attention).
A model whose attention ignores that (custom or remote code) would silently attend across
sequences, so `keeps_sequences_apart` checks the real model once before training.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

IGNORE = -100


def collate_padding_free(examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """The micro-batch's sequences end to end in one row of shape (1, total tokens), with
    `position_ids` restarting at 0 for each sequence and no attention mask: transformers
    then keeps attention inside each sequence (a block-diagonal mask for SDPA and eager,
    variable-length kernels for flash attention; `find_packed_sequence_indices`). Not
    packing: no sequence sees another, and none is cut. The first token of each sequence
    gets label -100, so the last token of one sequence is never trained to predict the
    first of the next: the loss has exactly the padded batch's targets."""
    ids, labels, positions = [], [], []
    for e in examples:
        n = len(e["input_ids"])
        ids += e["input_ids"]
        labels += [IGNORE] + list(e["labels"][1:])
        positions += range(n)
    as_row = functools.partial(torch.tensor, dtype=torch.long)
    return {"input_ids": as_row([ids]), "labels": as_row([labels]),
            "position_ids": as_row([positions])}


@torch.no_grad()
def keeps_sequences_apart(model: Any, device: Any, vocab_size: int) -> tuple[bool, str]:
    """Whether `model` (wrapped or not) attends within each padding-free sequence: the
    logits of a sequence packed after another must equal its logits alone, far closer than
    those of the same tokens with positions that do not restart (real cross-attention).
    Returns (ok, what was measured)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, vocab_size, (6,), generator=g)
    b = torch.randint(0, vocab_size, (9,), generator=g)
    row = torch.cat([a, b])[None].to(device)
    restart = torch.cat([torch.arange(6), torch.arange(9)])[None].to(device)
    running = torch.arange(15)[None].to(device)
    was_training = model.training
    model.eval()
    try:
        alone = model(input_ids=b[None].to(device), use_cache=False).logits.float()
        packed = model(input_ids=row, position_ids=restart, use_cache=False).logits.float()
        leaked = model(input_ids=row, position_ids=running, use_cache=False).logits.float()
    finally:
        model.train(was_training)
    d_packed = float((packed[:, 6:] - alone).abs().max())
    d_leak = float((leaked[:, 6:] - alone).abs().max())
    ok = d_packed <= 0.1 * d_leak
    return ok, (f"max |logit| difference, packed vs alone {d_packed:.2e}, with attention "
                f"across sequences {d_leak:.2e}")
