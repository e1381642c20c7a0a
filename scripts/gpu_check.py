"""`make gpu-check`: every GPU check in one command, one JSON of figures.

For the first GPU lent (or a user's GPU machine after `make setup`). Each check runs in its
own process with its own time limit, and the JSON says for each: ok, failed (with the tail
of its output) or skipped (and why), its wall time and its figures:

1. `cuda`: the device torch sees, torch's version.
2. `train_gpu`: benchmarks/train_gpu.py: Llama-3.1-8B shapes in bf16, synth-ray's training
   loop against a plain PEFT loop, padding-free batches and the chunked loss (tokens/s,
   MFU, ratios, peak memory). On CPU: its tiny smoke run (`--quick`), figures not owed.
3. `rehearse_8b`: `synth-ray rehearse jobs/configs/paper-8b.yaml` with SmolLM2-135M-Instruct
   as the target and source stand-in: on a GPU, vLLM engines serving the source and the
   target's LoRA adapters (respond, perplexity) on CUDA and Ray Train DDP on the GPU.
4. `perplexity_agreement`: the 8B rehearsal's perplexities of outputs under the vanilla
   target (vLLM's prompt log-probs, on CUDA with a GPU) recomputed with transformers on the
   same device from the same messages and responses: the largest relative difference
   (at most 2e-2 on a GPU in the model's 16-bit dtype, 1e-4 on CPU in fp32).
5. `rehearse_70b`: paper-70b in the same run directory: Ray Train with DeepSpeed ZeRO-3
   on the GPU, the 70B target's engine settings on one GPU.
The rehearsals need the paper configs' secret variables (HF_TOKEN, the four API keys): a
variable unset here is given a placeholder for the check (the stand-ins download nothing
and the stand-in server accepts any key) and the JSON says which.

Usage: python scripts/gpu_check.py [--out DIR] [--cpu-rehearsal]
(DIR defaults to $OUT, else runs/gpu-check; on CPU the rehearsals are skipped unless
--cpu-rehearsal: they take ~5 and ~8 min on 2 cores, docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECRETS = ("HF_TOKEN", "TOGETHER_API_KEY", "DEEPSEEK_API_KEY", "OPENAI_API_KEY",
           "GEMINI_API_KEY")
SMOL = "tiny://smollm2-135m-instruct"


def run(args: list[str], limit_s: int, env: dict | None = None) -> dict:
    t0 = time.monotonic()
    try:
        p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=limit_s,
                           env=env)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"{e.stdout or ''}{e.stderr or ''}\n(over its limit of {limit_s} s)"
    return {"status": "ok" if rc == 0 else "failed", "rc": rc,
            "wall_s": round(time.monotonic() - t0, 1), "tail": out[-3000:] if rc else None,
            "output": out}


def cuda() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"status": "skipped", "why": "no CUDA device torch can see",
                "torch": torch.__version__}
    return {"status": "ok", "device": torch.cuda.get_device_name(), "count":
            torch.cuda.device_count(), "torch": torch.__version__}


def train_gpu(gpu: bool) -> dict:
    got = run([sys.executable, "benchmarks/train_gpu.py", *([] if gpu else ["--quick"])],
              limit_s=300)
    out = got.pop("output")
    # its measurement lines (tokens/s, MFU, memory) and its ratios ("...: 1.02x")
    got["figures"] = {
        "lines": [ln.strip() for ln in out.splitlines() if "tok/s" in ln],
        "ratios": {m.group(1).strip(): float(m.group(2))
                   for m in re.finditer(r"^([^\n:]+):\s*([0-9.]+)x\s*$", out, re.M)}}
    if not gpu:
        got["note"] = "CPU smoke run (tiny shapes): no GPU figures; they are owed"
    return got


def rehearse(config: str, run_dir: Path, env: dict, limit_s: int) -> dict:
    got = run([sys.executable, "-m", "synth_ray.cli", "rehearse", config,
               f"run.dir={run_dir}", "--stand-in", f"source={SMOL}",
               "--stand-in", f"target={SMOL}"], limit_s, env)
    got.pop("output")
    manifest = run_dir / "manifest.json"
    if manifest.exists():
        stages = json.loads(manifest.read_text())["stages"]
        got["stages_wall_s"] = {n: s.get("wall_s") for n, s in stages.items()}
    return got


def perplexity_agreement(run_dir: Path, gpu: bool, rows: int = 16) -> dict:
    """vLLM's perplexities of the rehearsal's outputs (view outputs, scorer vanilla) against
    transformers' on this machine's device, from the run's own messages and responses."""
    import polars as pl
    import torch
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from synth_ray import models
    from synth_ray.metrics.perplexity import hf_perplexities

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    target = cfg["targets"][0]
    scored = pl.read_parquet(run_dir / "eval" / target["name"] / "perplexity.parquet").filter(
        (pl.col("view") == "outputs") & (pl.col("scorer") == "vanilla")
        & pl.col("perplexity").is_not_null())
    responses = pl.read_parquet(run_dir / "responses" / target["name"] / "test.parquet")
    both = scored.join(responses.select("id", pl.col("source").alias("condition"),
                                        "messages", "response"), on=["id", "condition"])
    both = both.head(rows)
    path = models.resolve_model(target["model"])
    device = "cuda" if gpu else "cpu"
    dtype = torch.bfloat16 if gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    tok = AutoTokenizer.from_pretrained(path)
    eot = cfg["evaluation"]["perplexity"]["end_of_turn"]
    with torch.no_grad():
        hf = hf_perplexities(model, tok, [(json.loads(m), r) for m, r in
                                          zip(both["messages"], both["response"], strict=True)],
                             eot)
    rel = [abs(a - b) / b for a, b in zip(both["perplexity"], hf, strict=True)]
    limit = 2e-2 if gpu else 1e-4
    worst = max(rel) if rel else float("nan")
    return {"status": "ok" if rel and worst <= limit else "failed", "rows": len(rel),
            "device": device, "dtype": str(dtype), "max_relative_difference": worst,
            "limit": limit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu-check")
    ap.add_argument("--cpu-rehearsal", action="store_true",
                    help="run the rehearsals on CPU too (minutes)")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    report: dict = {"commit": commit, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "checks": {}}
    checks = report["checks"]

    def save() -> None:
        tmp = out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(out / "gpu_check.json")  # never a half-written JSON

    checks["cuda"] = cuda()
    gpu = checks["cuda"]["status"] == "ok"
    save()
    checks["train_gpu"] = train_gpu(gpu)
    save()
    placeholders = [k for k in SECRETS if not os.environ.get(k)]
    env = {**os.environ, **{k: f"gpu-check-placeholder-{k.lower()}" for k in placeholders}}
    report["placeholder_secrets"] = placeholders
    run_dir = out / "rehearsal"
    for name, config, limit in (("rehearse_8b", "jobs/configs/paper-8b.yaml", 420),
                                ("rehearse_70b", "jobs/configs/paper-70b.yaml", 420)):
        if gpu or args.cpu_rehearsal:
            checks[name] = rehearse(config, run_dir, env, limit)
            checks[name]["device"] = "cuda" if gpu else "cpu"
            if name == "rehearse_8b" and checks[name]["status"] == "ok":
                try:
                    checks["perplexity_agreement"] = perplexity_agreement(run_dir, gpu)
                except Exception as e:  # noqa: BLE001 - reported in the JSON, with its type
                    checks["perplexity_agreement"] = {"status": "failed",
                                                      "tail": f"{type(e).__name__}: {e}"}
        else:
            checks[name] = {"status": "skipped", "why": "no GPU (--cpu-rehearsal runs it on "
                            "CPU; CI rehearses both configs: tests/integration/test_rehearse.py)"}
        save()
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    for name, c in checks.items():
        print(f"{name}: {c['status']}" + (f" ({c.get('why')})" if c.get("why") else "")
              + (f" {c['wall_s']} s" if "wall_s" in c else ""))
    print(f"figures: {out / 'gpu_check.json'}")
    sys.exit(1 if any(c["status"] == "failed" for c in checks.values()) else 0)


if __name__ == "__main__":
    main()
