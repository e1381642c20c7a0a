"""`ray job submit` to a local cluster of three Ray nodes started the way cluster.yaml starts
them: a head with CPU: 0 (token auth on, dashboard and job server on 127.0.0.1 only) and two
worker nodes joined with `ray start --address`, each with its own resources and temp dir;
the run directory in a bucket (a local S3 server). Engines and training workers can only
land on the workers, and the bucket alone holds the run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import psutil
import pytest

from .helpers import REPO, cli_env, free_port, run_cli

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _reap(proc: subprocess.Popen) -> None:
    """Wait for a node sent SIGTERM (`ray start --block` then stops its node)."""
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of it is left


@pytest.fixture
def ray_cluster(tmp_path):
    """Three nodes in the foreground (`ray start --block` each): stopping them stops only
    this cluster, never another Ray instance on the machine (`ray stop` would kill them
    all). Each node has its own temp dir (short: Unix socket paths are limited): `ray
    start` records the head's address in its own, never in /tmp/ray where a user's lies."""
    import ray

    # RAY_TMPDIR: the cluster's own root, where the head records its address (its temp dir
    # is root/ray) and where Ray's tools in every worker look it up (Ray Train's
    # placement-group cleaner would otherwise find a user's `ray start` in /tmp/ray)
    root = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    env = cli_env(RAY_AUTH_MODE="token", PATH=f"{BIN}:{os.environ['PATH']}", RAY_TMPDIR=root)
    subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True)
    port, dash = free_port(), free_port()
    temps, procs, logs = [root], [], []

    def start(name: str, *args: str) -> None:
        temps.append(os.path.join(root, "ray") if name == "rh"
                     else tempfile.mkdtemp(prefix=name, dir="/tmp"))
        logs.append(open(tmp_path / f"{name}.log", "w"))  # noqa: SIM115 - closed below
        # free ports where Ray has fixed defaults (the agent's 52365): another Ray instance
        # on the machine (the other test worker's, a user's) may hold them
        procs.append(subprocess.Popen(
            [BIN / "ray", "start", "--block", f"--temp-dir={temps[-1]}",
             f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats", *args],
            env=env, stdout=logs[-1],
            stderr=subprocess.STDOUT, start_new_session=True))

    # the head as cluster.yaml's: nothing is placed on it (CPU: 0)
    start("rh", "--head", f"--port={port}", "--dashboard-host", "127.0.0.1",
          f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}", "--num-cpus=0")
    url = f"http://127.0.0.1:{dash}"
    try:
        # ready when the job server answers an authenticated request (its agent may come
        # up seconds after the dashboard on a busy machine)
        deadline = time.time() + 240
        while time.time() < deadline and procs[0].poll() is None:
            ok = subprocess.run([BIN / "ray", "job", "list", "--address", url], env=env,
                                capture_output=True, text=True, timeout=60)
            if ok.returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail(f"ray head not ready: {(tmp_path / 'rh.log').read_text()[-3000:]}")
        head_address = f"{ray.util.get_node_ip_address()}:{port}"
        for i, name in enumerate(("wa", "wb")):  # two workers, a CPU and a resource each
            start(name, f"--address={head_address}", "--num-cpus=1",
                  f"--resources={json.dumps({f'worker_{i}': 1})}")
        deadline = time.time() + 180
        while time.time() < deadline:
            out = subprocess.run([BIN / "ray", "list", "nodes", "--address", url, "--format",
                                  "json"], env=env, capture_output=True, text=True, timeout=60)
            try:
                nodes = json.loads(out.stdout) if out.returncode == 0 else []
            except json.JSONDecodeError:  # "No resource in the cluster": none registered yet
                nodes = []
            if sum(n["state"] == "ALIVE" for n in nodes) == 3:
                break
            time.sleep(2)
        else:
            pytest.fail(f"worker nodes not up: {out.stdout[-2000:]} {out.stderr[-2000:]}")
        yield url, dash, env
    finally:
        for proc in reversed(procs):  # all three stop at once
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _reap(proc)
        for f in logs:
            f.close()
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


def ray_list(kind: str, url: str, env: dict) -> list[dict]:
    out = subprocess.run([BIN / "ray", "list", kind, "--address", url, "--format", "json",
                          "--detail", "--limit", "10000"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_job_submit_runs_the_pipeline_on_a_private_authenticated_cluster(s3_server, ray_cluster,
                                                                         tmp_path) -> None:
    """The whole pipeline with `run.dir` in a bucket; the run is then read back from the
    bucket alone into a fresh folder and checked there, and a driver on a fresh mirror
    finds every stage current."""
    from synth_ray.core.storage import Remote

    url, dash, env = ray_cluster
    listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == dash}
    assert listening == {"127.0.0.1"}
    with pytest.raises(urllib.error.HTTPError) as err:  # no token, no jobs
        urllib.request.urlopen(url + "/api/jobs/", timeout=10)
    assert err.value.code in (401, 403)

    uri = f"{s3_server}/job-run"
    one_source = ("sources=[{name: small-a, model: 'tiny://small-a', bracket: small}]")
    args = ["jobs/configs/plumbing.yaml", f"run.dir={uri}", "dataset.max_rows=40", one_source,
            "conditions.single_source={small: small-a}",
            "conditions.multi_source={small: [small-a, small-a, small-a, small-a]}",
            # no self-preference pass here (test_judge.py has it): CI time
            "judge.max_safety_prompts=4", "targets.0.self_source=null",
            # a run that joins a cluster names its accelerator (core/readiness.py)
            "resources.accelerator=cpu"]
    proc = subprocess.run(
        [BIN / "ray", "job", "submit", "--address", url, "--working-dir", ".", "--",
         "python", "jobs/pipeline.py", *args, f"run.local_dir={tmp_path / 'driver-mirror'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "succeeded" in log and "report at" in log
    # what needs a CPU ran on the two workers, never on the head: the vLLM engines (one
    # actor per replica) and Ray Train's workers
    nodes = ray_list("nodes", url, env)
    assert len(nodes) == 3
    head = next(n["node_id"] for n in nodes if n["is_head_node"])
    actors = ray_list("actors", url, env)
    engines = [a for a in actors if "vLLMEngineStageUDF" in a["class_name"]]
    trainers = [a for a in actors if a["class_name"] == "RayTrainWorker"]
    assert engines and trainers, sorted({a["class_name"] for a in actors})
    assert all(a["node_id"] != head for a in engines + trainers)

    # everything below reads what the bucket holds, nothing of the driver's mirror
    run_dir = tmp_path / "run"
    Remote(uri, run_dir).pull()
    assert not (run_dir / ".lock").exists()
    # Ray Train's checkpoints went to the bucket itself; the engines loaded adapters from it
    assert Remote(uri + "/ray_train", tmp_path / "ckpt").pull() > 0
    assert "checkpoint_manager_snapshot.json" in {p.name for p in (tmp_path / "ckpt").rglob("*")}
    assert (run_dir / "adapters" / "tiny-target" / "human" / "hash").exists()
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for f in (p for p in run_dir.rglob("*") if p.is_file()):
        assert secret.encode() not in f.read_bytes(), f  # credentials stay in the environment
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = manifest["stages"]
    names = ("split", "generate", "build", "train", "respond", "score", "judge", "report")
    assert [stages[s]["status"] for s in names] == ["done"] * len(names)
    for out in (o for s in names for o in stages[s]["outputs"]):
        assert (run_dir / out).stat().st_size > 0, out
    # stage = CLI verb = run-dir folder: each stage's outputs lie in its own folders
    from synth_ray.design import STAGE_FOLDERS

    for s in names:
        assert stages[s]["outputs"] and all(
            o.split("/")[0] in STAGE_FOLDERS[s] for o in stages[s]["outputs"]), s
    # every stage's numbers reached the report: one adapter per condition, each scored
    adapters = stages["train"]["adapters"]
    assert {a.split("--")[1] for a in adapters} == {"human", "single-small", "multi-small"}
    summary = json.loads((run_dir / "eval" / "tiny-target" / "summary.json").read_text())
    md = (run_dir / "report" / "tables.md").read_text()
    evaluation = md[md.index("## Evaluation"):]
    for condition, s in summary["perplexity"]["outputs"]["summary"].items():
        row = next(line for line in evaluation.splitlines()
                   if line.startswith(f"| {condition} | "))
        assert f"{s['mean']:.4g}" in row
    judged = pl.read_parquet(run_dir / "judge" / "tiny-target" / "judgements.parquet")
    assert judged.height == pl.read_parquet(
        run_dir / "responses" / "tiny-target" / "safety.parquet").height > 0
    page = (run_dir / "report" / "index.html").read_text()
    assert page.count("<table class=\"sortable\">") == md.count("\n|---")
    for png in (run_dir / "report" / "plots").glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG"), png

    # a driver elsewhere (a fresh mirror) resumes the run from the bucket: nothing to redo
    proc = run_cli("run", *args, f"run.local_dir={tmp_path / 'second-mirror'}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    skipped = [n for n in names if f"[{n}] up to date" in proc.stdout + proc.stderr]
    assert skipped == list(names), (proc.stdout + proc.stderr)[-4000:]
    # its log continues the first driver's, in the bucket
    Remote(uri, run_dir).pull()
    text = (run_dir / "log.txt").read_text()
    assert text.index("[report] done") < text.index("[report] up to date")
