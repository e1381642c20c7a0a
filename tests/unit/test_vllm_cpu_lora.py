"""The CPU LoRA kernels of the vLLM plugin against vLLM's own reference kernels (which the
plugin replaces): same products on every valid adapter index, zero for index -1."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from synth_ray.engines import cpu_lora as fast

ref = pytest.importorskip("vllm.lora.ops.torch_ops")

SLOTS, IN, OUT, R = 4, 24, 40, 8


def _segments():
    # runs of tokens of one adapter, as vLLM's prefill metadata has them
    idx = torch.tensor([2, 0, 3, 2, 1])
    lens = torch.tensor([5, 1, 7, 3, 4])
    starts = torch.cumsum(lens, 0) - lens
    return idx, lens, starts, int(lens.sum())


@pytest.mark.parametrize("four_d", [True, False])
def test_shrink_and_expand_match_vllm_reference(four_d) -> None:
    gen = torch.Generator().manual_seed(0)
    idx, lens, starts, n = _segments()
    a = torch.randn(SLOTS, 1, R, IN, generator=gen)
    b = torch.randn(SLOTS, 1, OUT, R, generator=gen)
    if not four_d:
        a, b = a.squeeze(1), b.squeeze(1)
    x = torch.randn(n, IN, generator=gen)
    meta = (starts, lens, idx, len(idx), int(lens.max()), n)

    got, want = torch.zeros(n, R), torch.zeros(n, R)
    fast.sgmv_shrink(x, a, got, *meta, 0.5)
    ref.sgmv_shrink(x, a, want, *meta, 0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

    for add in (False, True):
        base = torch.randn(n, OUT, generator=gen)
        got, want = base.clone(), base.clone()
        fast.sgmv_expand(want_in := torch.randn(n, R, generator=gen), b, got, *meta, add)
        ref.sgmv_expand(want_in, b, want, *meta, add)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)

        wide = torch.randn(n, OUT + 16, generator=gen)
        got, want = wide.clone(), wide.clone()
        fast.sgmv_expand_slice(want_in, b, got, *meta, 8, OUT, add)
        ref.sgmv_expand_slice(want_in, b, want, *meta, 8, OUT, add)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(got[:, :8], wide[:, :8])  # outside the slice: untouched


def test_decode_kernels_match_vllm_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    tokens = torch.tensor([3, 3, 0, 1, 3, 2, 0])
    a = torch.randn(SLOTS, 1, R, IN, generator=gen)
    b = torch.randn(SLOTS, 1, OUT, R, generator=gen)
    x = torch.randn(len(tokens), IN, generator=gen)
    got, want = torch.zeros(len(tokens), R), torch.zeros(len(tokens), R)
    fast.bgmv_shrink(x, a, got, tokens, 2.0)
    ref.bgmv_shrink(x, a, want, tokens, 2.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    h = torch.randn(len(tokens), R, generator=gen)
    base = torch.randn(len(tokens), OUT, generator=gen)
    got, want = base.clone(), base.clone()
    fast.bgmv_expand(h, b, got, tokens, True)
    ref.bgmv_expand(h, b, want, tokens, True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_index_minus_one_means_no_adapter() -> None:
    """vLLM marks a base request's tokens -1; its reference kernels read that as the last
    slot. Here those rows get nothing, whatever the slots hold."""
    gen = torch.Generator().manual_seed(2)
    tokens = torch.tensor([-1, 1, -1, 1])
    a = torch.randn(SLOTS, 1, R, IN, generator=gen)
    x = torch.randn(4, IN, generator=gen)
    got = torch.full((4, R), 7.0)
    fast.bgmv_shrink(x, a, got, tokens, 1.0)
    assert torch.equal(got[[0, 2]], torch.zeros(2, R))
    torch.testing.assert_close(got[[1, 3]], x[[1, 3]] @ a[1, 0].T)
    leaked = torch.zeros(4, R)
    ref.bgmv_shrink(x, a, leaked, tokens, 1.0)
    assert leaked[0].abs().sum() > 0  # the reference applies the last slot's adapter


def test_register_replaces_the_cpu_wrapper_kernels(monkeypatch) -> None:
    from vllm.lora.punica_wrapper import punica_cpu

    for name in fast.OPS:
        monkeypatch.setattr(punica_cpu, name, getattr(ref, name))
    monkeypatch.setenv(fast.ENV, "0")
    fast.register()
    assert punica_cpu.sgmv_shrink is ref.sgmv_shrink  # switched off: vLLM's own
    monkeypatch.setenv(fast.ENV, "1")
    fast.register()
    assert all(getattr(punica_cpu, n) is getattr(fast, n) for n in fast.OPS)


def test_vllm_finds_the_plugin() -> None:
    # vLLM loads `vllm.general_plugins` entry points in its engine processes
    eps = importlib.metadata.entry_points(group="vllm.general_plugins")
    assert any(ep.value == "synth_ray.engines.cpu_lora:register" and ep.load() is fast.register
               for ep in eps)
