"""The `generate` stage on CPU with ray.data.llm's text stages (the baseline: a chat
template stage before the engine and a detokenize stage after it, each an actor pool of its
own) against synth-ray's pipeline (the driver templates the prompt text, the engine
tokenizes it, the postprocess task decodes the tokens: one actor pool, the engine).

Each extra actor pool starts a process that imports transformers and loads the tokenizer
before the first row moves, per pipeline; the demo starts ten. Each variant runs
`synth-ray run jobs/configs/plumbing.yaml --until generate` (one source, greedy, `--rows`
rows) in a fresh process, alternating, `--repeats` times; the baseline sets
`synth_ray.engines.processors.RAY_TEXT_STAGES`.
Reported: the stage's wall seconds (manifest), whether
both give the same prompt tokens and answers, and synth-ray / ray stages.
(Before commit 220c810 this file compared Ray's tokenize stage with none: the
docs/benchmarks.md table "Ray's tokenize stage vs the engine tokenizing".)

Run: .venv/bin/python benchmarks/text_stages.py [--rows 60] [--repeats 2]
     .venv/bin/python benchmarks/text_stages.py --quick   (seconds: the test suite)
"""

from __future__ import annotations

import argparse
import json
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
engines.RAY_TEXT_STAGES = sys.argv.pop(1) == "ray-stages"
from synth_ray.cli import app
app(sys.argv[1:], prog_name="synth-ray")
"""


def generate(variant: str, rows: int, run_dir: Path) -> float:
    args = ["run", "jobs/configs/plumbing.yaml", f"run.dir={run_dir}", "--until", "generate",
            "sources=[{name: small-a, model: 'tiny://small-a', bracket: small}]",
            "conditions.single_source={small: small-a}",
            "conditions.multi_source={small: [small-a, small-a, small-a, small-a]}",
            "generation.sampling.temperature=0", f"dataset.max_rows={rows}"]
    out = subprocess.run([sys.executable, "-c", CHILD, variant, *args], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{variant}: failed\n{out.stderr[-3000:]}")
    return json.loads((run_dir / "manifest.json").read_text())["stages"]["generate"]["wall_s"]


def main() -> None:
    import polars as pl

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, seconds: the test suite runs every benchmark so")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats = 8, 1
    work = Path(tempfile.mkdtemp(prefix="text-stages-"))
    walls: dict[str, list[float]] = {"ray-stages": [], "synth-ray": []}
    answers: dict[str, pl.DataFrame] = {}
    try:
        for i in range(args.repeats):
            for variant in walls:
                run_dir = work / f"{variant}-{i}"
                walls[variant].append(generate(variant, args.rows, run_dir))
                answers[variant] = pl.read_parquet(
                    run_dir / "generations" / "small-a.parquet").sort("gen_key").select(
                    "gen_key", "prompt_tokens", "response")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"generate stage, 1 source, {args.rows} rows, {args.repeats} run(s) each, medians")
    for k, m in med.items():
        print(f"{k:12} {m:7.1f} s")
    print(f"synth-ray / ray stages: {med['synth-ray'] / med['ray-stages']:.2f}x; same prompt "
          f"tokens and answers: {answers['ray-stages'].equals(answers['synth-ray'])}")


if __name__ == "__main__":
    main()
