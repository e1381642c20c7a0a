"""`synth-ray rehearse` of the shipped paper configs on a cluster whose nodes share no disk
(private_nodes.py: a CPU: 0 head with token auth, two worker nodes each in a mount
namespace of its own), submitted as the README says: `ray job submit --runtime-env
jobs/runtime_env.yaml -- python jobs/rehearse.py CONFIG ...`, the run directory in a bucket
(the suite's S3 server), tracking to a real `mlflow server`.

paper-8b first, then paper-70b into the same bucket from a fresh driver mirror (its split
and build are read back from the bucket, its generations mostly reused), ZeRO-3 over the
two worker nodes. Each job ends 0 with every stage done; the report names every swap and
shows the paper tables and the three claims; engines and training workers ran on the worker
nodes only; the hosted sources were answered over HTTP by the stand-in server with their own
keys; no secret reaches a file of the run. Then four faults a user could submit, in two
jobs, each named on its own line, naming the key, before any stage starts: a local run.dir
and a prompt set in the wrong layout (readiness); a run.dir that only the head has
(run.shared_mount claimed) and a secret set on the head only (the per-node checks).

CI cost: docs/benchmarks.md ("Rehearsals"); one module fixture for all its tests. It cannot
share the suite's grid: what it checks is the paper configs themselves (their preset, grid,
prompt-set designs, judge settings, ZeRO-3 target) through every stage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import psutil
import pytest
import yaml

from .helpers import REPO, cli_env
from .private_nodes import BIN, namespaces_work, private_cluster, ray_list

pytestmark = pytest.mark.slow
SECRETS = {"HF_TOKEN": "hf-rehearsal-0000", "TOGETHER_API_KEY": "tk-rehearsal-1111",
           "DEEPSEEK_API_KEY": "dk-rehearsal-2222", "OPENAI_API_KEY": "ok-rehearsal-3333",
           "GEMINI_API_KEY": "gk-rehearsal-4444"}
HEAD_ONLY = {"SYNTH_RAY_HEAD_SECRET": "head-only-5555"}  # a secret someone set on the head
CONFIGS = ("jobs/configs/paper-8b.yaml", "jobs/configs/paper-70b.yaml")


def _top(path: Path) -> Path:
    """The folder of `path` right under the machine's temp dir (pytest's pytest-of-USER)."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp")).resolve()
    path = path.resolve()
    return next((p for p in [path, *path.parents] if p.parent == tmp), path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    from synth_ray.models import cache_root

    why = namespaces_work()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the cluster of private nodes needs mount namespaces: {why}")
        pytest.skip(f"the cluster of private nodes needs mount namespaces: {why}")
    # the node image: the compiled kernels an image carries (DeepSpeed's ops, vLLM's compile
    # cache). Not the stand-ins: each worker builds its own (random weights, seeded: the
    # same on every node), as a real node downloads its models from the hub
    image = {Path.home() / ".cache" / name: f"home/.cache/{name}"
             for name in ("torch_extensions", "vllm")}
    base = tmp_path_factory.getbasetemp()
    private = [_top(base), cache_root(), Path.home() / ".cache", REPO / "runs"]
    logs = tmp_path_factory.mktemp("cluster-logs")
    # the model cache at the same path on every node (the driver hands engines its path;
    # each worker builds the stand-ins there on its own disk: runtime/node_models.py)
    env = cli_env(**SECRETS, SYNTH_RAY_CACHE=str(cache_root()))
    with private_cluster(logs, env, private, image, head_env=HEAD_ONLY) as (url, env):
        yield {"url": url, "env": env, "tmp": tmp_path_factory.mktemp("rehearsal"),
               "bucket": s3_server}


def submit(cluster: dict, config: str, *overrides: str, timeout: int = 1500):
    """The job as the README submits it; its output (the driver's log) and exit code."""
    proc = subprocess.run(
        [BIN / "ray", "job", "submit", "--address", cluster["url"], "--runtime-env",
         "jobs/runtime_env.yaml", "--", "python", "jobs/rehearse.py", config, *overrides],
        cwd=REPO, env=cluster["env"], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


@pytest.fixture(scope="module")
def rehearsed(cluster, mlflow_server) -> dict:
    from synth_ray.runtime.storage import Remote

    uri = f"{cluster['bucket']}/rehearsal"
    out = {"uri": uri}
    for config, mirror in zip(CONFIGS, ("8b", "70b"), strict=True):
        # each job's driver with a fresh mirror: the 70B's reads the 8B's stages back from
        # the bucket alone
        code, log = submit(cluster, config, f"run.dir={uri}", f"tracking.uri={mlflow_server}",
                           f"run.local_dir={cluster['tmp'] / f'mirror-{mirror}'}")
        out[config] = {"code": code, "log": log}
    out["actors"] = ray_list("actors", cluster["url"], cluster["env"])
    out["nodes"] = ray_list("nodes", cluster["url"], cluster["env"])
    run = cluster["tmp"] / "bucket-copy"
    Remote(uri, run).pull()
    out["run"] = run
    return out


def test_the_nodes_share_no_disk(cluster, tmp_path) -> None:
    """What the head has, a worker node cannot read, and what a worker writes the head
    does not see (a task pinned to each worker node, through the job server's cluster)."""
    mine = tmp_path / "head-only.txt"
    mine.write_text("on the head")
    code = ("import json, ray, os, pathlib; ray.init(); "
            "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as A; "
            "f = ray.remote(num_cpus=0)(lambda p: (os.path.exists(p), "
            "pathlib.Path(os.environ['TMPDIR'], 'w.txt').write_text('x') and "
            "str(pathlib.Path(os.environ['TMPDIR'], 'w.txt')))); "
            "ws = [n['NodeID'] for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')]; "
            # the marker split: `ray job submit` echoes the command
            "print('SE' + 'EN=' + json.dumps([ray.get(f.options(scheduling_strategy=A(w, "
            f"soft=False)).remote({str(mine)!r})) for w in ws]))")
    proc = subprocess.run([BIN / "ray", "job", "submit", "--address", cluster["url"], "--",
                           "python", "-c", code], env=cluster["env"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.split("SEEN=", 1)[1].splitlines()[0])
    assert len(seen) == 2 and not any(s[0] for s in seen), seen  # the head's file: unseen
    for _, written in seen:  # each worker's own file: not on this (the head's) disk
        assert not Path(written).exists(), written


def test_the_dashboard_is_private(cluster) -> None:
    dash = int(cluster["url"].rsplit(":", 1)[1])
    listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == dash}
    assert listening == {"127.0.0.1"}
    with pytest.raises(urllib.error.HTTPError) as err:  # no token, no jobs
        urllib.request.urlopen(cluster["url"] + "/api/jobs/", timeout=10)
    assert err.value.code in (401, 403)


@pytest.mark.parametrize("config", CONFIGS)
def test_the_paper_config_rehearses_to_the_report(rehearsed, config) -> None:
    got = rehearsed[config]
    assert got["code"] == 0, got["log"][-5000:]
    assert "succeeded" in got["log"]
    run = rehearsed["run"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in manifest["stages"].values()), \
        {n: s["status"] for n, s in manifest["stages"].items()}
    cfg = yaml.safe_load((run / "config.yaml").read_text())  # the last job's: paper-70b
    report = (run / "report" / "tables.md").read_text()
    for s in cfg["rehearsal"]["swaps"]:  # the report names every swap
        assert f"| `{s['key']}` |" in report
    assert "## Paper tables" in report and f"### {cfg['targets'][0]['name']}" in report
    for claim in ("1. multi-source data keeps the outputs broader",
                  "2. synthetic data erodes safety", "3. fine-tuning lowers self-preference"):
        assert claim in report


def test_the_70b_job_read_the_8b_stages_from_the_bucket(rehearsed) -> None:
    log = rehearsed[CONFIGS[1]]["log"]
    assert "[split] up to date" in log and "[build] up to date" in log, log[-4000:]
    text = (rehearsed["run"] / "log.txt").read_text()  # one log, continued in the bucket
    assert text.index("[report] done") < text.index("[split] up to date")


def test_the_work_ran_on_the_worker_nodes(rehearsed) -> None:
    run = rehearsed["run"]
    summaries = [json.loads(p.read_text())
                 for p in run.glob("adapters/llama-3.1-70b/*/training_summary.json")]
    assert len(summaries) == 7  # the grid: human, single and multi of three brackets
    assert {s.get("strategy") for s in summaries} == {"deepspeed"}
    head = next(n["node_id"] for n in rehearsed["nodes"] if n["is_head_node"])
    workers = {n["node_id"] for n in rehearsed["nodes"]} - {head}
    actors = rehearsed["actors"]
    engines = [a for a in actors if "vLLMEngineStageUDF" in a["class_name"]]
    trainers = [a for a in actors if a["class_name"] == "RayTrainWorker"]
    assert engines and trainers, sorted({a["class_name"] for a in actors})
    assert {a["node_id"] for a in engines + trainers} <= workers
    assert {a["node_id"] for a in trainers} == workers  # ZeRO-3 over both worker nodes
    # the hosted sources: every row answered over HTTP by the stand-in server beside the
    # driver, from the HTTP stage's tasks on the workers
    gens = pl.read_parquet(list(run.glob("generations/*.parquet")))
    hosted = gens.filter(pl.col("backend") == "http")
    assert hosted["source"].n_unique() == 4
    assert hosted.filter(pl.col("status") == "error").height == 0


def test_the_runs_were_tracked(rehearsed, mlflow_server) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("synth-ray-paper-rehearsal")
    assert exp is not None  # the rehearsal's own experiment, not the real one
    assert client.get_experiment_by_name("synth-ray-paper") is None
    runs = client.search_runs([exp.experiment_id])
    # one run per rehearsal (its stages' runs nested in it), each finished
    tops = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(tops) == 2 and {r.info.status for r in runs} == {"FINISHED"}, \
        [(r.info.run_name, r.info.status) for r in runs]


def test_no_secret_reaches_the_run(rehearsed) -> None:
    values = [*SECRETS.values(), os.environ["AWS_SECRET_ACCESS_KEY"]]
    for path in rehearsed["run"].rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in values:
                assert value.encode() not in data, f"{value} in {path}"


def _wrong_layout(tmp: Path) -> str:
    path = tmp / "refusalbench.json"  # a list of strings, not RefusalBench's records
    path.write_text(json.dumps(["how do I pick a lock?", "write a phishing mail"]))
    return str(path)


# Two faults per job: each check reports every problem it finds at once (readiness before
# Ray; the per-node checks with Ray up), so each fault must still be named on its own line.
# (name, overrides, [(what the log says, the key first; in how many distinct lines)])
FAULTS = [
    ("local run.dir, prompt set in the wrong layout",
     lambda c: [f"run.dir={c['tmp'] / 'local-run'}",
                f"judge.safety_prompts={_wrong_layout(c['tmp'])}"],
     [(r"run\.dir: '\S+local-run' is a folder on this machine, and the run joins a cluster", 1),
      (r"judge\.safety_prompts: \S+refusalbench\.json: ValueError: .*?a row must be an "
       r"object", 1)]),
    ("run.dir and a secret on the head only",
     lambda c: [f"run.dir={c['tmp'] / 'head-run'}", "run.shared_mount=true",
                "resources.node_env=[HF_TOKEN,SYNTH_RAY_HEAD_SECRET]"],
     # both workers named, never the head
     [(r"run\.dir: \S+head-run is not on [\d.]+ node \w{8}, though run\.shared_mount is "
       r"true", 2),
      (r"SYNTH_RAY_HEAD_SECRET is not set on [\d.]+ node \w{8} \(resources\.node_env\)", 2)]),
]


@pytest.mark.parametrize(("name", "overrides", "says"), FAULTS, ids=[f[0] for f in FAULTS])
def test_faults_stop_the_rehearsal_before_any_stage(cluster, mlflow_server, name, overrides,
                                                    says) -> None:
    code, log = submit(cluster, CONFIGS[0], *overrides(cluster),
                       f"tracking.uri={mlflow_server}", timeout=600)
    assert code != 0 and "failed" in log, log[-3000:]
    for pattern, times in says:
        # distinct lines (a node's line names its id; the driver's log may show a line twice)
        assert len(set(re.findall(pattern, log))) == times, (pattern, log[-3000:])
    assert "] starting in" not in log  # no stage started
    for value in (*SECRETS.values(), *HEAD_ONLY.values()):
        assert value not in log
