"""vLLM engine start on CPU: compiled (vLLM's default) against eager, one process.

The demo's pipeline starts about ten engines (one per source, the target with its adapters,
the scorer, the judge), each on a model of a few MB, so an engine's start is most of a
stage's time. Each start runs in a fresh child process (a first start in a process pays
imports that later ones would not), compiled first as the baseline, then with
`enforce_eager=True` (what synth-ray sets for `tiny://` models), alternating, `--repeats`
times. Reported: seconds from `LLM(...)` to a ready engine, and eager / compiled.

Run: .venv/bin/python benchmarks/engine_start.py [--model tiny://pt-reference] [--repeats 2]
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
import json, sys, time
def main():
    from vllm import LLM, SamplingParams
    t = time.perf_counter()
    llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=512, **json.loads(sys.argv[2]))
    start = time.perf_counter() - t
    t = time.perf_counter()
    llm.generate(["Hello"] * 64, SamplingParams(max_tokens=32, min_tokens=16, seed=1),
                 use_tqdm=False)
    print("RESULT", json.dumps({"start_s": start, "generate_s": time.perf_counter() - t}))
if __name__ == "__main__":
    main()
"""


def start(model: str, kwargs: dict) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, model, json.dumps(kwargs)],
                         capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line.split(" ", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny://pt-reference")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from synth_ray.pretrain import ensure_pretrained
    from synth_ray.tiny import resolve_model

    if args.model.startswith("tiny://pt-"):
        ensure_pretrained([args.model.removeprefix("tiny://")])
    path = resolve_model(args.model)
    runs: dict[str, list[dict[str, float]]] = {"compiled": [], "eager": []}
    for _ in range(args.repeats):
        runs["compiled"].append(start(path, {}))
        runs["eager"].append(start(path, {"enforce_eager": True}))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("start_s", "generate_s")}
           for k, v in runs.items()}
    print(f"model {args.model}, {args.repeats} start(s) each, medians")
    print(f"{'mode':10} {'start s':>8} {'64 answers s':>13}")
    for k, m in med.items():
        print(f"{k:10} {m['start_s']:8.1f} {m['generate_s']:13.2f}")
    print(f"eager / compiled: start {med['eager']['start_s'] / med['compiled']['start_s']:.2f}x, "
          f"generation {med['eager']['generate_s'] / med['compiled']['generate_s']:.2f}x")


if __name__ == "__main__":
    main()
