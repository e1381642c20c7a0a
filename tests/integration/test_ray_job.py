"""`ray job submit` against a local head started the way cluster.yaml starts one: token
auth on, dashboard and job server on 127.0.0.1 only; the run directory in a bucket (a local
S3 server), as on a multi-node cluster."""

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


@pytest.fixture
def ray_head(tmp_path):
    """A head in the foreground (`ray start --block`): stopping it stops only this cluster,
    never another Ray instance on the machine (`ray stop` would kill them all)."""
    env = cli_env(RAY_AUTH_MODE="token", PATH=f"{BIN}:{os.environ['PATH']}")
    subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True)
    port, dash = free_port(), free_port()
    # its own temp dir (short: Unix socket paths are limited): `ray start` records its
    # address there, not in /tmp/ray where a later ray.init() would try to join it
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    log = open(tmp_path / "head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen([BIN / "ray", "start", "--head", "--block", f"--port={port}",
                             f"--temp-dir={temp}", "--dashboard-host", "127.0.0.1",
                             f"--dashboard-port={dash}", "--num-cpus=2",
                             "--disable-usage-stats"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        # ready when the job server answers an authenticated request (its agent may come
        # up seconds after the dashboard on a busy machine)
        deadline = time.time() + 240
        while time.time() < deadline and head.poll() is None:
            ok = subprocess.run([BIN / "ray", "job", "list", "--address", url], env=env,
                                capture_output=True, text=True, timeout=60)
            if ok.returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail(f"ray head not ready: {(tmp_path / 'head.log').read_text()[-3000:]}")
        yield url, dash, env
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its cluster
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # whatever of it is left
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_job_submit_runs_the_pipeline_on_a_private_authenticated_head(s3_server, ray_head,
                                                                      tmp_path) -> None:
    """The whole pipeline with `run.dir` in a bucket; the run is then read back from the
    bucket alone into a fresh folder and checked there, and a driver on a fresh mirror
    finds every stage current."""
    from synth_ray.core.storage import Remote

    url, dash, env = ray_head
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
            "judge.max_safety_prompts=4", "targets.0.self_source=null"]
    proc = subprocess.run(
        [BIN / "ray", "job", "submit", "--address", url, "--working-dir", ".", "--",
         "python", "jobs/pipeline.py", *args, f"run.local_dir={tmp_path / 'driver-mirror'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "succeeded" in log and "report at" in log

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
    assert page.count("<table>") == md.count("\n|---")
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
