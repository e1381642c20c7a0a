"""LoRA training throughput on one GPU: synth-ray's per-worker loop against a plain PEFT loop.

The loop under test is `synth_ray.train.loop.run_loop` with `TorchStep`, the code every Ray
Train worker runs (clipping, schedule, per-step metrics and all), on a random-initialised
model of Llama-3.1-8B's shapes in bf16 (the lent GPU machines reach no model hub, and
throughput does not depend on the weights' values), LoRA from `synth_ray.train.lora` with
the paper's r=16, alpha=32 on all seven projections. Ray itself is not on those machines;
its per-step overhead was measured on CPU (docs/benchmarks.md, Training throughput).

Baseline: a plain loop in the same process over the same model and the same batches
(forward, backward, AdamW step, nothing else). Both: tokens/s over the steps after the first
two (warm-up), MFU = tokens/s * 4N / the card's dense bf16 peak (`loop.PEAK_FLOPS`).
Then the paper config's micro-batch (8 x up to 1024 tokens) with and without gradient
checkpointing, to show which fits the card.

Run (GPU): python benchmarks/train_gpu.py
Run (CPU smoke test, tiny shapes): python benchmarks/train_gpu.py --tiny (--quick: fewer steps)
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

LLAMA_31_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                   num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                   max_position_embeddings=131072, rope_theta=500000.0,
                   tie_word_embeddings=False)
TINY = dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
            tie_word_embeddings=False)


def build_model(shape: dict, device: str):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from synth_ray.config import LoRASection
    from synth_ray.train.lora import peft_config

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the card: 8B weights never touch the host
        base = AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=torch.bfloat16,
                                                attn_implementation="sdpa")
    return get_peft_model(base, peft_config(LoRASection()))


def examples(n: int, seq: int, vocab: int, seed: int) -> list[dict[str, list[int]]]:
    """Random token ids, lengths uniform in [seq/2, seq], the first quarter a prompt (label
    -100), as `encode_rows` lays out a chat example with loss on the response."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(seq // 2, seq + 1, (1,), generator=g))
        ids = torch.randint(0, vocab, (length,), generator=g).tolist()
        prompt = length // 4
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def loader(data, batch: int, seed: int, padding_free: bool = False):
    from torch.utils.data import DataLoader, DistributedSampler

    from synth_ray.train.data import collate
    from synth_ray.train.padding_free import collate_padding_free

    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=seed)
    col = collate_padding_free if padding_free else (lambda b: collate(b, pad_id=0))
    return DataLoader(data, batch_size=batch, sampler=sampler, collate_fn=col), sampler


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def plain(model, data, batch: int, device: str) -> float:
    """The baseline: forward, backward, AdamW step; tokens/s after two warm-up steps."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
    dl, _ = loader(data, batch, seed=42)
    tokens, t0 = 0, None
    for i, b in enumerate(dl):
        if i == 2:
            sync(device)
            tokens, t0 = 0, time.perf_counter()
        b = {k: v.to(device) for k, v in b.items()}
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(b["attention_mask"].sum())
    sync(device)
    dt = time.perf_counter() - t0
    del opt
    return tokens / dt


def synth_ray_loop(model, data, batch: int, device: str, padding_free: bool = False,
                   chunk: int | None = None) -> float:
    """`run_loop` as a Ray Train worker drives it (report and checkpoint hooks are no-ops
    here: Ray's cost is measured on CPU); padded batches and the model's loss unless
    asked (issue 22)."""
    from synth_ray.train.loop import (
        LoopSettings,
        TorchStep,
        TrainState,
        build_optimizer,
        build_scheduler,
        plan_steps,
        run_loop,
    )

    dl, sampler = loader(data, batch, seed=42, padding_free=padding_free)
    plan = plan_steps(len(data), batch, 1, 1, epochs=1, warmup_ratio=0.03)
    opt = build_optimizer(model, 5e-5, 0.01)
    step = TorchStep(model, opt, build_scheduler(opt, "cosine", plan), 1.0)
    settings = LoopSettings(device=device, eval_every=10**9, patience=5,
                            n_params=n_params(model), report_every=10, loss_chunk=chunk)
    state = run_loop(step, dl, sampler, None, plan, TrainState(), settings,
                     report=lambda m, save: None, on_best=lambda: None)
    steady = state.history[2:]
    del opt, step
    mfus = [h["mfu"] for h in steady if "mfu" in h]
    if mfus:
        print(f"    run_loop's own MFU metric, median of steps: {sorted(mfus)[len(mfus) // 2]:.3f}")
    return sum(h["tokens"] for h in steady) / sum(h["step_time_s"] for h in steady)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def memory(device: str) -> str:
    if device != "cuda":
        return "-"
    gib = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return f"{gib:.1f} GiB"


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (smoke test)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    args = ap.parse_args()
    if args.quick:
        args.tiny, args.steps, args.seq, args.batch = True, 4, 64, 2

    from synth_ray.train.loop import mfu, peak_flops

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    shape = TINY if args.tiny else LLAMA_31_8B
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    t0 = time.perf_counter()
    model = build_model(shape, device)
    n = n_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"device={name} params={n / 1e9:.2f}B trainable(LoRA)={trainable / 1e6:.1f}M "
          f"built in {time.perf_counter() - t0:.0f} s; torch {torch.__version__}")
    peak = peak_flops()
    print(f"dense bf16 peak used for MFU: {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'none'}")
    vocab = shape["vocab_size"]
    rows: list[tuple[str, float, str]] = []

    def record(label: str, run) -> None:
        try:
            tps = run()
        except torch.OutOfMemoryError as e:
            rows.append((label, 0.0, memory(device)))
            print(f"  {label:52s} out of memory ({str(e).splitlines()[0][:60]})", flush=True)
            free(device)
            return
        m = mfu(tps, n, peak)
        rows.append((label, tps, memory(device)))
        print(f"  {label:52s} {tps:10.0f} tok/s  MFU {m if m is None else round(m, 3)}  "
              f"peak mem {rows[-1][2]}", flush=True)
        free(device)

    data = examples(args.batch * args.steps, args.seq, vocab, seed=1)
    # Warm-up over every batch shape: cuBLAS picks kernels and the allocator grows per new
    # shape, which otherwise lands on whichever loop runs first.
    plain(model, data, args.batch, device)
    free(device)
    memory(device)
    # Alternate baseline and loop twice: the second pair shows the noise of the first.
    for rep in (1, 2):
        record(f"plain PEFT loop, b={args.batch} (baseline, pass {rep})",
               lambda: plain(model, data, args.batch, device))
        record(f"synth-ray run_loop, b={args.batch} (pass {rep})",
               lambda: synth_ray_loop(model, data, args.batch, device))
    base = sum(r[1] for r in rows[:4] if "plain" in r[0]) / 2
    ours = sum(r[1] for r in rows[:4] if "run_loop" in r[0]) / 2
    print(f"ratio synth-ray run_loop / plain loop: {ours / base:.3f}x")

    # Issue 22: padding-free batches (the same maths), then the chunked loss on top.
    for rep in (1, 2):
        record(f"synth-ray run_loop, b={args.batch}, padding-free (pass {rep})",
               lambda: synth_ray_loop(model, data, args.batch, device, padding_free=True))
        record(f"synth-ray run_loop, b={args.batch}, padding-free + chunked loss (pass {rep})",
               lambda: synth_ray_loop(model, data, args.batch, device, True, 1024))
    free_tps = sum(r[1] for r in rows if "padding-free (pass" in r[0]) / 2
    both_tps = sum(r[1] for r in rows if "chunked loss (pass" in r[0]) / 2
    print(f"padding-free / padded tokens/s: {free_tps / ours:.2f}x")
    print(f"padding-free + chunked loss / padded tokens/s: {both_tps / ours:.2f}x")
    # The largest micro-batch that fits without checkpointing, padding-free + chunked loss.
    for b in (8, 12, 16):
        record(f"synth-ray run_loop, b={b}, padding-free + chunked loss, no checkpointing",
               lambda b=b: synth_ray_loop(model, examples(b * args.steps, args.seq, vocab, 4),
                                          b, device, True, 1024))
        if rows[-1][1] == 0.0:
            break

    # Worst case of a micro-batch of `batch`: every sequence at max_length (peak memory).
    full = [{"input_ids": e["input_ids"][:1] * args.seq, "labels": [-100] + [1] * (args.seq - 1)}
            for e in examples(args.batch * 6, args.seq, vocab, seed=3)]
    record(f"synth-ray run_loop, b={args.batch}, every sequence {args.seq} tokens",
           lambda: synth_ray_loop(model, full, args.batch, device))

    # What the paper's LoRA dropout (0.1) costs: the same loop with the dropouts removed.
    drops = {n: m for n, m in model.named_modules() if n.endswith("lora_dropout")}
    for m in drops.values():
        m["default"] = torch.nn.Identity()
    record(f"synth-ray run_loop, b={args.batch}, LoRA dropout off (not the paper's)",
           lambda: synth_ray_loop(model, data, args.batch, device))
    for m in drops.values():
        m["default"] = torch.nn.Dropout(0.1)

    # A micro-batch of 8 sequences of up to max_length, with and without checkpointing.
    data8 = examples(8 * args.steps, args.seq, vocab, seed=2)
    inner = model.base_model.model
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    inner.enable_input_require_grads()
    record("synth-ray run_loop, b=8, gradient checkpointing",
           lambda: synth_ray_loop(model, data8, 8, device))
    inner.gradient_checkpointing_disable()
    record("synth-ray run_loop, b=8, no checkpointing",
           lambda: synth_ray_loop(model, data8, 8, device))


if __name__ == "__main__":
    main()
