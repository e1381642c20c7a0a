"""Pre-training step time of the demo's tiny models: fp32 against bf16 autocast, one process.

The model of `pt-reference` (synth_ray/toy/pretrain.py) at its batch size, on batches of the
demo's typical length, one thread (the pre-training runs two models at once on 2 cores).
Baseline: fp32 forward/backward/AdamW step. Compared: the same under
`torch.autocast("cpu", bfloat16)` (training.autocast), weights and optimizer in fp32. The
order alternates, the median of `--steps` steps per round is taken. Also printed: the loss
after the same steps from the same start, to show autocast learns the same way.

Run: .venv/bin/python benchmarks/pretrain_speed.py [--steps 10] [--rounds 3]
     .venv/bin/python benchmarks/pretrain_speed.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--length", type=int, default=90, help="tokens per row (the demo: ~90)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds = 3, 1

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from synth_ray.toy.pretrain import PRETRAINED, VOCAB
    from synth_ray.train.loop import mixed_precision

    torch.set_num_threads(1)
    spec = PRETRAINED["pt-reference"]
    m = spec.model
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=m.hidden_size,
                         intermediate_size=m.intermediate_size,
                         num_hidden_layers=m.num_hidden_layers,
                         num_attention_heads=m.num_attention_heads,
                         num_key_value_heads=m.num_key_value_heads, max_position_embeddings=512)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, VOCAB, (spec.batch_size, args.length), generator=gen)
               for _ in range(args.steps)]

    def run(mode: str) -> tuple[float, float]:
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate)
        amp = mixed_precision("cpu", mode)
        times = []
        for x in batches:
            t = time.perf_counter()
            with amp():
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(time.perf_counter() - t)
        return statistics.median(times[1:]), float(loss.detach())

    res: dict[str, list[tuple[float, float]]] = {"none": [], "bfloat16": []}
    for _ in range(args.rounds):
        for mode in res:
            res[mode].append(run(mode))
    med = {k: statistics.median(t for t, _ in v) for k, v in res.items()}
    print(f"pt-reference shape, batch {spec.batch_size} x {args.length} tokens, 1 thread, "
          f"median of {args.rounds} rounds x {args.steps} steps")
    for k, v in res.items():
        print(f"  {'fp32' if k == 'none' else 'bf16 autocast':14} {med[k]:.3f} s/step, "
              f"loss after {args.steps} steps {v[-1][1]:.5f}")
    print(f"bf16 autocast / fp32 step time: {med['bfloat16'] / med['none']:.2f}x "
          f"(CPU bf16 native: {torch.cpu._is_avx512_bf16_supported()})")


if __name__ == "__main__":
    main()
