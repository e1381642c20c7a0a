"""GPU-only checks live here; they skip on machines without CUDA (CI has none)."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_tiny_model_runs_on_gpu() -> None:
    from transformers import AutoModelForCausalLM

    from synth_ray import models

    model = AutoModelForCausalLM.from_pretrained(models.resolve_model("tiny://target")).cuda()
    out = model(torch.tensor([[1, 2, 3]], device="cuda"))
    assert out.logits.shape[-1] == model.config.vocab_size
