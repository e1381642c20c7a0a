"""The `generate` stage on CPU with ray.data.llm's text stages (the baseline: a chat
template stage before the engine and a detokenize stage after it, each an actor pool of its
own) against synth-ray's pipeline (the driver templates the prompt text, the engine
tokenizes it, the postprocess task decodes the tokens: one actor pool, the engine).

Each extra actor pool starts a process that imports transformers and loads the tokenizer
before the first row moves, per pipeline; the demo starts ten. Each variant runs
`synth-ray run jobs/configs/plumbing.yaml --until generate` (one source, greedy, `--rows`
rows) in a fresh process, alternating, `--repeats` times; the baseline sets
`synth_ray.engines.processors.RAY_TEXT_STAGES`.
A third variant, `unbounded` (full runs only), is synth-ray's pipeline with its pre- and
postprocess tasks unbounded (Ray Data's default task pool), against their pool of one
task per engine (`processors.light_map`): each task in flight is a worker process that
imports Ray Data. Reported: the stage's wall seconds (manifest), the machine's CPU seconds
over the whole command (/proc/stat: Ray's workers are not children the command reaps),
whether all give the same prompt tokens and answers, and the ratios.
(Before commit 220c810 this file compared Ray's tokenize stage with none: the
docs/benchmarks.md table "Ray's tokenize stage vs the engine tokenizing".)

Run: .venv/bin/python benchmarks/text_stages.py [--rows 60] [--repeats 2] [--batch-size 8]
     .venv/bin/python benchmarks/text_stages.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import sys
import synth_ray.engines.processors as engines
variant = sys.argv.pop(1)
engines.RAY_TEXT_STAGES = variant == "ray-stages"
if variant == "unbounded":  # Ray Data's default task pool around the engine
    engines.light_map = lambda replicas: dict(engines.LIGHT)
from synth_ray.cli import app
app(sys.argv[1:], prog_name="synth-ray")
"""


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (user, nice, system, irq, softirq)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / os.sysconf("SC_CLK_TCK")


def generate(variant: str, rows: int, run_dir: Path, batch: int | None
             ) -> tuple[float, float]:
    args = ["run", "jobs/configs/plumbing.yaml", f"run.dir={run_dir}", "--until", "generate",
            "sources=[{name: small-a, model: 'tiny://small-a', bracket: small}]",
            "conditions.single_source={small: small-a}",
            "conditions.multi_source={small: [small-a, small-a, small-a, small-a]}",
            "generation.sampling.temperature=0", f"dataset.max_rows={rows}",
            *([f"generation.batch_size={batch}"] if batch else [])]
    cpu = busy_seconds()
    out = subprocess.run([sys.executable, "-c", CHILD, variant, *args], cwd=REPO,
                         capture_output=True, text=True)
    cpu = busy_seconds() - cpu
    if out.returncode:
        sys.exit(f"{variant}: failed\n{out.stderr[-3000:]}")
    stage = json.loads((run_dir / "manifest.json").read_text())["stages"]["generate"]
    return stage["wall_s"], cpu


def main() -> None:
    import polars as pl

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="rows per engine batch, one block each (default: the config's)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats = 8, 1
    work = Path(tempfile.mkdtemp(prefix="text-stages-"))
    variants = ["ray-stages", "synth-ray"] + ([] if args.quick else ["unbounded"])
    walls: dict[str, list[float]] = {v: [] for v in variants}
    cpus: dict[str, list[float]] = {v: [] for v in variants}
    answers: dict[str, pl.DataFrame] = {}
    try:
        for i in range(args.repeats):
            for variant in walls:
                run_dir = work / f"{variant}-{i}"
                wall, cpu = generate(variant, args.rows, run_dir, args.batch_size)
                walls[variant].append(wall)
                cpus[variant].append(cpu)
                answers[variant] = pl.read_parquet(
                    run_dir / "generations" / "small-a.parquet").sort("gen_key").select(
                    "gen_key", "prompt_tokens", "response")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print(f"generate stage, 1 source, {args.rows} rows in batches of "
          f"{args.batch_size or 'the config'}, {args.repeats} run(s) each, medians "
          "(stage wall; machine CPU over the whole command)")
    for k, m in med.items():
        print(f"{k:12} {m:7.1f} s  CPU {cpu[k]:7.1f} s")
    same = all(answers[k].equals(answers["synth-ray"]) for k in answers)
    print(f"synth-ray / ray stages: {med['synth-ray'] / med['ray-stages']:.2f}x; same prompt "
          f"tokens and answers: {same}")
    if "unbounded" in med:
        print(f"light stages, one task per engine / unbounded: wall "
              f"{med['synth-ray'] / med['unbounded']:.2f}x, CPU "
              f"{cpu['synth-ray'] / cpu['unbounded']:.2f}x")


if __name__ == "__main__":
    main()
