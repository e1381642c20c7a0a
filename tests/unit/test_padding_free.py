"""Padding-free batches and the chunked loss give the padded batch's maths (CPU, the tiny
target, fp32): the same loss, the same LoRA gradients, the same adapter after a short run;
and the check that guards padding-free sees a model whose attention crosses sequences."""

from __future__ import annotations

import random

import pytest
import torch

from synth_ray import models
from synth_ray.config import LoRASection
from synth_ray.train.data import IGNORE, LengthGroupedSampler, collate, length_grouped_order
from synth_ray.train.loss import micro_batch_loss
from synth_ray.train.padding_free import collate_padding_free, keeps_sequences_apart

RTOL = 1e-5


@pytest.fixture(scope="module")
def target_path() -> str:
    return models.resolve_model("tiny://target")


def lora_model(path: str, dropout: float = 0.0):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from synth_ray.train.lora import peft_config

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                attn_implementation="sdpa")
    model = get_peft_model(base, peft_config(LoRASection(dropout=dropout)))
    with torch.no_grad():  # LoRA B starts at zero: give it values, so gradients reach A too
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model


def examples(n: int, seed: int, vocab: int = 2000) -> list[dict[str, list[int]]]:
    """Chat-shaped examples of mixed lengths: a prompt (label -100), then the response."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length, prompt = rng.randint(5, 40), rng.randint(1, 4)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        out.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return out


def loss_and_grads(model, batch, chunk=None):
    model.zero_grad(set_to_none=True)
    loss = micro_batch_loss(model, batch, chunk)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=RTOL, atol=1e-7, msg=n)


def test_padding_free_equals_padded_loss_and_lora_gradients(target_path) -> None:
    model = lora_model(target_path)
    ex = examples(6, seed=1)
    padded_loss, padded = loss_and_grads(model, collate(ex, pad_id=0))
    free_loss, free = loss_and_grads(model, collate_padding_free(ex))
    assert free_loss == pytest.approx(padded_loss, rel=RTOL)
    assert_close(free, padded)


def test_chunked_loss_equals_the_models_loss(target_path) -> None:
    model = lora_model(target_path)
    for batch in (collate(examples(5, seed=2), pad_id=0), collate_padding_free(examples(5, 3))):
        full_loss, full = loss_and_grads(model, batch)
        for chunk in (7, 64, 100000):  # chunks that cut mid-sequence, and one for all
            got_loss, got = loss_and_grads(model, batch, chunk)
            assert got_loss == pytest.approx(full_loss, rel=RTOL)
            assert_close(got, full)


def test_the_last_token_of_a_sequence_never_predicts_the_next_one() -> None:
    ex = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    batch = collate_padding_free(ex)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]
    assert "attention_mask" not in batch


def test_a_short_run_trains_the_same_adapter_padding_free_and_chunked(target_path) -> None:
    from torch.utils.data import DataLoader, DistributedSampler

    from synth_ray.train.loop import (
        LoopSettings,
        TorchStep,
        TrainState,
        build_optimizer,
        build_scheduler,
        plan_steps,
        run_loop,
    )

    def train(padding_free: bool, chunk):
        # no LoRA dropout: its masks are drawn per token, so a different layout draws others
        model = lora_model(target_path)
        ex = examples(24, seed=4)
        col = collate_padding_free if padding_free else (lambda b: collate(b, pad_id=0))
        sampler = DistributedSampler(ex, num_replicas=1, rank=0, shuffle=True, seed=1)
        loader = DataLoader(ex, batch_size=4, sampler=sampler, collate_fn=col)
        plan = plan_steps(len(ex), 4, 1, 2, 1, 0.1)
        opt = build_optimizer(model, 1e-3, 0.0)
        step = TorchStep(model, opt, build_scheduler(opt, "cosine", plan), 1.0)
        torch.manual_seed(7)
        settings = LoopSettings(device="cpu", eval_every=100, patience=5, n_params=1,
                                loss_chunk=chunk)
        run_loop(step, loader, sampler, None, plan, TrainState(), settings,
                 report=lambda m, s: None, on_best=lambda: None)
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    padded = train(False, None)
    both = train(True, 16)
    for n in padded:  # 6 optimizer steps, each with the padded batch's loss and gradients
        torch.testing.assert_close(both[n], padded[n], rtol=1e-3, atol=1e-5)  # Adam: 1e-6 noise


def test_the_guard_sees_attention_across_sequences(target_path) -> None:
    model = lora_model(target_path)
    ok, measured = keeps_sequences_apart(model, "cpu", 2000)
    assert ok, measured

    class IgnoresPositions(torch.nn.Module):
        """A model whose attention never learns where a sequence starts."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, position_ids=None, **kw):
            return self.inner(input_ids=input_ids, **kw)

    ok, measured = keeps_sequences_apart(IgnoresPositions(model), "cpu", 2000)
    assert not ok, measured


def test_length_grouped_batches_are_seeded_complete_and_similar() -> None:
    rng = random.Random(5)
    lengths = [rng.randint(1, 500) for _ in range(403)]
    order = length_grouped_order(lengths, 4, seed=3)
    assert sorted(order) == list(range(403)) and order == length_grouped_order(lengths, 4, 3)
    assert order != length_grouped_order(lengths, 4, 4)
    spread = [max(lengths[i] for i in order[s:s + 4]) - min(lengths[i] for i in order[s:s + 4])
              for s in range(0, 400, 4)]
    shuffled = list(range(403))
    random.Random(0).shuffle(shuffled)
    spread_random = [max(lengths[i] for i in shuffled[s:s + 4]) -
                     min(lengths[i] for i in shuffled[s:s + 4]) for s in range(0, 400, 4)]
    assert sum(spread) < 0.2 * sum(spread_random)
    shards = [list(LengthGroupedSampler(lengths, 4, 3, r, seed=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1  # every rank the same number of batches
    assert set().union(*shards) == set(range(403))
