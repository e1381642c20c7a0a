"""How synth-ray's own work grows with the data (issue 33): a scale curve.

1. **The curve.** `synth-ray run jobs/configs/plumbing.yaml --until judge` (two tiny sources
   in one bracket, short answers: the engines are not the bottleneck, synth-ray's own work
   shows) on Dolly-shaped datasets of N rows (the sample's rows repeated, each instruction
   made unique), with N/10 safety prompts (the paper: 15,011 rows, 2,006 safety prompts).
   Per stage (generate, build, score, judge): wall seconds per dataset row (the manifest's
   wall_s / N: every stage's work grows with N), the driver's peak RSS (the manifest's
   `driver_peak_rss_mb`, the process's peak so far), the bytes of the stage's run-dir
   folders; then, on the finished run, a second `run` (every stage skipped: the resume
   scan) and the input hashes of every stage (what `run` and `status` compute).
2. **The bookkeeping alone at the paper's size** (no engines): 12 sources x 15,011 rows =
   180,132 generations through the real store (content keys, shard writes of
   `generation.shard_rows`, the resume scan of what is pending, consolidation into the
   final file), then the real `build` stage on them, then generate's and build's input
   hashes. Wall seconds per generation and the process's peak RSS.

Prints `per-row cost 15k/1k: N.NNx (worst stage: NAME)` (largest size over smallest, each
stage's wall per row), and the marginal form (seconds per row between the two largest sizes
over the two smallest), which a fixed start-up cost cannot hide.

Run: .venv/bin/python benchmarks/scale.py [--sizes 1000 4000 15000] [--out scale.json]
                                           [--plot docs/scale.png]
     .venv/bin/python benchmarks/scale.py --quick   (the test suite: generate and build at
                                 24 rows from one source, the bookkeeping at 2 sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CURVE_STAGES = ("generate", "build", "score", "judge")
PAPER_ROWS, PAPER_SOURCES = 15011, 12


def unique_rows(rows: list[dict], n: int, key: str) -> list[dict]:
    """`n` rows cycling `rows`; repeats get a suffix on `key` (datasets drop repeats)."""
    out = []
    for i in range(n):
        r = dict(rows[i % len(rows)])
        if i >= len(rows):
            r[key] = f"{r[key]} (variant {i // len(rows)})"
            if "id" in r:
                r["id"] = f"{r['id']}-v{i // len(rows)}"
        out.append(r)
    return out


def write_inputs(folder: Path, n: int) -> tuple[Path, Path]:
    """A Dolly-shaped JSONL of `n` rows and a safety-prompt JSONL of n/10 prompts."""
    sample = REPO / "synth_ray" / "toy" / "sample"
    dolly = [json.loads(x) for x in (sample / "dolly_sample.jsonl").read_text().splitlines()]
    safety = [json.loads(x) for x in (sample / "safety_prompts.jsonl").read_text().splitlines()]
    data, prompts = folder / f"dolly-{n}.jsonl", folder / f"safety-{n}.jsonl"
    for path, rows in ((data, unique_rows(dolly, n, "instruction")),
                       (prompts, unique_rows(safety, max(n // 10, 10), "prompt"))):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, prompts


def overrides(data: Path, prompts: Path, run_dir: Path, sources: int) -> list[str]:
    """plumbing.yaml with `sources` (1 or 2) tiny sources in one bracket, short answers."""
    names = ["small-a", "small-b"][:sources]
    return [f"run.dir={run_dir}", f"dataset.path={data}", f"judge.safety_prompts={prompts}",
            "sources=[" + ", ".join(f"{{name: {n}, model: 'tiny://{n}', bracket: small}}"
                                    for n in names) + "]",
            "conditions.single_source={small: small-a}",
            f"conditions.multi_source={{small: [{', '.join(names * (4 // len(names)))}]}}",
            "generation.sampling.max_tokens=8", "generation.sampling.min_tokens=4",
            "evaluation.sampling.max_tokens=8", "evaluation.sampling.min_tokens=4",
            "training.max_steps=1", "judge.max_reason_chars=16"]


def cli(*args: str, timeout: int = 7200) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "synth_ray.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        sys.exit(f"synth-ray {' '.join(args[:2])} failed:\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0


def folder_bytes(run_dir: Path, stage: str) -> int:
    from synth_ray.design import STAGE_FOLDERS

    return sum(f.stat().st_size for d in STAGE_FOLDERS[stage] if (run_dir / d).exists()
               for f in (run_dir / d).rglob("*") if f.is_file())


def input_hash_seconds(run_dir: Path, until: str) -> dict[str, float]:
    """The input hash of each stage up to `until` on the finished run, timed (what `run`
    and `status` compute)."""
    from synth_ray.config import load_config
    from synth_ray.runtime.pipeline import Context, input_hash, stage_table
    from synth_ray.runtime.rundir import RunDir

    ctx = Context(load_config(run_dir / "config.yaml"), RunDir(run_dir, None))
    out = {}
    stages = stage_table()
    for stage in stages[:[s.name for s in stages].index(until) + 1]:
        stage.impl()  # imported first: the hash, not the import, is timed
        t0 = time.perf_counter()
        input_hash(stage, ctx)
        out[stage.name] = time.perf_counter() - t0
    return out


def curve_point(n: int, work: Path, until: str, sources: int) -> dict:
    data, prompts = write_inputs(work, n)
    run_dir = work / f"run-{n}"
    args = overrides(data, prompts, run_dir, sources)
    total = cli("run", "jobs/configs/plumbing.yaml", *args, "--until", until)
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    rows = {s: {"wall_s": stages[s]["wall_s"], "per_row_ms": 1000 * stages[s]["wall_s"] / n,
                "driver_peak_rss_mb": stages[s].get("driver_peak_rss_mb"),
                "bytes": folder_bytes(run_dir, s), "rows": stages[s].get("rows")}
            for s in CURVE_STAGES if s in stages}
    resume = cli("run", "jobs/configs/plumbing.yaml", *args, "--until", until)
    hashes = input_hash_seconds(run_dir, until)
    print(f"rows {n:>6}: run {total:7.1f} s; " + "; ".join(
        f"{s} {r['wall_s']:.1f} s ({r['per_row_ms']:.2f} ms/row, driver "
        f"{r['driver_peak_rss_mb']:.0f} MiB, {r['bytes'] / 2**20:.1f} MiB)"
        for s, r in rows.items()) + f"; resume {resume:.1f} s; input hashes "
        f"{sum(hashes.values()):.2f} s", flush=True)
    return {"rows": n, "run_s": total, "stages": rows, "resume_s": resume,
            "input_hash_s": hashes}


def bookkeeping(n_rows: int, n_sources: int, work: Path) -> dict:
    """The store, resume scan, consolidation, build and input hashing of n_rows x n_sources
    generations, in this process, no engine."""
    import polars as pl

    from synth_ray.config import load_config
    from synth_ray.design import generation_path, part_path
    from synth_ray.engines.store import GEN_SCHEMA, GenerationStore, build_requests
    from synth_ray.runtime.pipeline import Context, execute, get_stage, input_hash
    from synth_ray.runtime.rundir import RunDir

    data, _ = write_inputs(work, n_rows)
    run_dir = work / f"book-{n_rows}x{n_sources}"
    names = [f"{b}-{k}" for b in ("small", "medium", "large") for k in "abcd"][:n_sources]
    sources = ", ".join(f"{{name: {s}, model: 'tiny://small-a', bracket: {s.split('-')[0]}}}"
                        for s in names)
    cfg = load_config(REPO / "jobs" / "configs" / "plumbing.yaml",
                      [f"dataset.path={data}", f"sources=[{sources}]",
                       "conditions.single_source={}", "conditions.multi_source={}"])
    ctx = Context(cfg, RunDir(run_dir, None))
    execute(get_stage("split"), ctx)
    frames = {k: pl.read_parquet(ctx.run.path(part_path(k)))
              for k in range(1, cfg.split.num_parts + 1)}
    t = dict.fromkeys(("content keys", "shard writes", "resume scan", "consolidate"), 0.0)
    total = 0
    for source in cfg.sources:  # every source answers every row: the paper's 12 x 15,011
        t0 = time.perf_counter()
        requests = build_requests(cfg, source, frames)
        t1 = time.perf_counter()
        answers = requests.drop("seed").with_columns(
            response=pl.lit("An answer of a few words."), prompt_tokens=pl.lit(40),
            completion_tokens=pl.lit(8), finish_reason=pl.lit("stop"), latency_s=pl.lit(0.1),
            error=pl.lit(""), status=pl.lit("ok"), attempt_time=pl.lit(time.time()),
        ).select(list(GEN_SCHEMA)).cast(GEN_SCHEMA)  # fmt: skip
        store = GenerationStore(ctx.run.path(generation_path(source.name)).parent, source.name)
        for i in range(0, answers.height, cfg.generation.shard_rows):
            store.write_shard(answers.slice(i, cfg.generation.shard_rows))
        t2 = time.perf_counter()
        assert store.pending(requests).height == 0
        t3 = time.perf_counter()
        store.consolidate(requests)  # writes the final file, removes the shards
        t4 = time.perf_counter()
        for key, a, b in (("content keys", t0, t1), ("shard writes", t1, t2),
                          ("resume scan", t2, t3), ("consolidate", t3, t4)):
            t[key] += b - a
        total += requests.height
    t0 = time.perf_counter()
    execute(get_stage("build"), ctx)
    t["build"] = time.perf_counter() - t0
    ctx.input_hashes.clear()
    t["input hashes"] = 0.0
    for stage in ("generate", "build"):
        get_stage(stage).impl()  # imported first: the hash, not the import, is timed
        t0 = time.perf_counter()
        input_hash(get_stage(stage), ctx)
        t["input hashes"] += time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bookkeeping {total:>7} generations: " + "; ".join(
        f"{k} {v:.2f} s ({1e6 * v / total:.1f} us/gen)" for k, v in t.items())
        + f"; peak RSS {peak:.0f} MiB", flush=True)
    return {"generations": total, "seconds": t, "peak_rss_mb": peak}


def ratios(points: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Per stage: per-row cost at the largest size over the smallest, and the marginal
    seconds per row between the two largest sizes over the two smallest."""
    lo, hi = points[0], points[-1]
    flat = {s: hi["stages"][s]["per_row_ms"] / lo["stages"][s]["per_row_ms"]
            for s in hi["stages"]}
    marginal = {}
    if len(points) >= 3:
        def slope(a, b, s):
            return ((b["stages"][s]["wall_s"] - a["stages"][s]["wall_s"])
                    / (b["rows"] - a["rows"]))
        for s in hi["stages"]:
            first = slope(points[0], points[1], s)
            marginal[s] = slope(points[-2], points[-1], s) / first if first > 0 else float("nan")
    return flat, marginal


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = [p["rows"] for p in points]
    for s in points[-1]["stages"]:
        a.plot(sizes, [p["stages"][s]["per_row_ms"] for p in points], marker="o", label=s)
        b.plot(sizes, [p["stages"][s]["driver_peak_rss_mb"] for p in points], marker="o",
               label=s)
    a.set(xscale="log", yscale="log", xlabel="dataset rows", ylabel="wall ms per row",
          title="per-row cost")
    b.set(xscale="log", xlabel="dataset rows", ylabel="MiB", title="driver peak RSS")
    a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 15000])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    until = "build" if args.quick else "judge"
    sizes = [24] if args.quick else sorted(args.sizes)
    book = [(250, 4), (1000, 4)] if args.quick else [(PAPER_ROWS, PAPER_SOURCES)]
    with tempfile.TemporaryDirectory(prefix="synth-ray-scale-") as tmp:
        work = Path(tmp)
        # quick: one source, one engine start (the curve's code path, not its figures)
        points = [curve_point(n, work, until, 1 if args.quick else 2) for n in sizes]
        books = [bookkeeping(r, s, work) for r, s in book]
    flat, marginal = ratios(points)
    if len(points) > 1:
        worst = max(flat, key=flat.get)
        print(f"per-row cost {points[-1]['rows'] // 1000}k/{points[0]['rows'] // 1000}k: "
              f"{flat[worst]:.2f}x (worst stage: {worst})")
    if marginal:
        worst = max(marginal, key=lambda s: marginal[s])
        print(f"marginal per-row cost, largest sizes/smallest: {marginal[worst]:.2f}x "
              f"(worst stage: {worst})")
    if len(books) > 1:
        per = [sum(b["seconds"].values()) / b["generations"] for b in books]
        print(f"bookkeeping per generation {books[-1]['generations']}/"
              f"{books[0]['generations']}: {per[-1] / per[0]:.2f}x")
    if args.out:
        args.out.write_text(json.dumps({"curve": points, "ratios": flat, "marginal": marginal,
                                        "bookkeeping": books}, indent=2) + "\n")
    if args.plot and len(points) > 1:
        plot(points, args.plot)


if __name__ == "__main__":
    main()
