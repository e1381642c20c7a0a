"""The `generate` stage on CPU with Ray's tokenize stage (ray.data.llm's default: the
baseline) against without it (the engine tokenizes the templated prompt itself, what
synth-ray does), one process each.

A tokenize stage is one more actor pool per pipeline that starts, imports transformers and
loads the tokenizer before the first row moves, to produce the token ids the engine would
produce from the same text (both tokenize with the model's tokenizer, special tokens
added). Each variant runs `synth-ray run jobs/configs/plumbing.yaml --until generate` (one
source, greedy, `--rows` rows) in a fresh process, alternating, `--repeats` times; the
baseline puts the tokenize stage back into synth-ray's engine config. Reported: the stage's
wall seconds (manifest), whether both give the same answers, and without / with.

Run: .venv/bin/python benchmarks/text_stages.py [--rows 60] [--repeats 2]
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
import synth_ray.engines as engines
if sys.argv.pop(1) == "with":
    plain = engines._engine_config
    def with_tokenize_stage(*args, **kwargs):
        config = plain(*args, **kwargs)
        config.tokenize_stage = config.chat_template_stage  # Ray's default: a stage of its own
        return config
    engines._engine_config = with_tokenize_stage
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
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="text-stages-"))
    walls: dict[str, list[float]] = {"with": [], "without": []}
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
        print(f"{k + ' tokenize stage':24} {m:7.1f} s")
    print(f"without / with: {med['without'] / med['with']:.2f}x; same prompt tokens and "
          f"answers: {answers['with'].equals(answers['without'])}")


if __name__ == "__main__":
    main()
