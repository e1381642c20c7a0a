"""The paper's configs on Ray's simulated autoscaling cluster: the fake multi-node provider
(what `ray.cluster_utils.AutoscalingCluster` and Ray's own autoscaler tests start), with the
node types of cluster.yaml itself: a head with CPU: 0, an L40S type and an H100 type, GPU
nodes from 0, going back after cluster.yaml's idle timeout (so both types are up at once).

What each stage asks Ray for is built by the functions the stages call (each engine's
processor config and ray.data.llm's own placement-group function; each target's Ray Train
ScalingConfig: tests/integration/place_plan.py) and placed. The test checks that the
autoscaler starts nodes of the GPU type each request names and nothing lands on the head
or on another type: the small bracket's sources on L40S, everything else on H100, the 8B
training on one H100 node while L40S nodes are up beside it, the 70B ZeRO-3 workers over
two; no engine planned on CPU. Fake GPUs cannot run vLLM or NCCL: the test stops at
placement."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from synth_ray.config import load_config
from synth_ray.plan import make_plan

from .helpers import REPO, cli_env, free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
HERE = Path(__file__).parent
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())


def fake_provider_config(gcs: str) -> dict:
    """cluster.yaml's node types and scaling limits on the fake multi-node provider (the
    AWS node_config and start commands have no meaning there)."""
    types = {}
    for name, t in CLUSTER["available_node_types"].items():
        if name == CLUSTER["head_node_type"]:
            continue
        types[name] = {"resources": dict(t["resources"]), "node_config": {},
                       "min_workers": t.get("min_workers", 0),
                       "max_workers": t["max_workers"]}
    head = CLUSTER["available_node_types"][CLUSTER["head_node_type"]]
    types["ray.head.default"] = {"resources": dict(head["resources"]), "node_config": {},
                                 "max_workers": 0}
    return {"cluster_name": "fake-synth-ray", "max_workers": CLUSTER["max_workers"],
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                         "disable_node_updaters": True, "disable_launch_config_check": True,
                         "gcs_address": gcs},
            "available_node_types": types, "head_node_type": "ray.head.default",
            "auth": {}, "upscaling_speed": CLUSTER["upscaling_speed"],
            # cluster.yaml's: nodes of one stage are still up when the next is placed
            "idle_timeout_minutes": CLUSTER["idle_timeout_minutes"], "docker": {},
            "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
            "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": []}


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory):
    """The head, started as `AutoscalingCluster.start` starts it (RAY_FAKE_CLUSTER, a fast
    autoscaler loop) but in the foreground with its own temp dir and port, so stopping it
    stops only this cluster (AutoscalingCluster runs `ray stop --force`, which would kill
    every Ray instance on the machine). Yields (GCS address, env, temp dir)."""
    import ray

    tmp = tmp_path_factory.mktemp("fake")
    port = free_port()
    gcs = f"{ray.util.get_node_ip_address()}:{port}"
    cfg = tmp / "autoscaling.json"
    cfg.write_text(json.dumps(fake_provider_config(gcs)))
    temp = tempfile.mkdtemp(prefix="fk", dir="/tmp")  # short: Unix socket paths
    head_cpus = CLUSTER["available_node_types"][CLUSTER["head_node_type"]]["resources"]["CPU"]
    # token auth, as cluster.yaml's head (and Ray's default for `ray start`): the fake
    # nodes, started by the head's autoscaler, inherit the mode and read the same token
    env = cli_env(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
                  RAY_AUTH_MODE="token", PATH=f"{BIN}:{os.environ['PATH']}")
    subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True)
    log = open(tmp / "head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen(
        [BIN / "ray", "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp}",
         f"--num-cpus={head_cpus}", "--num-gpus=0", f"--autoscaling-config={cfg}",
         "--dashboard-host=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield gcs, env, tmp
    finally:
        head.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # the fake nodes are the head's children
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_paper_configs_place_on_the_nodes_cluster_yaml_makes(fake_cluster) -> None:
    gcs, env, tmp = fake_cluster
    paths = [REPO / "jobs" / "configs" / n for n in ("paper-8b.yaml", "paper-70b.yaml")]
    for path in paths:
        plan = make_plan(load_config(path))
        assert plan["problems"] == [] and plan["device"] == "cuda"
        for e in (e for s in plan["stages"] for e in s["engines"]):
            assert e["device"] == "cuda" and e["fits"], (path.name, e)  # no CPU engine
    out = tmp / "placed.json"
    proc = subprocess.run([sys.executable, str(HERE / "place_plan.py"), gcs,
                           ",".join(map(str, paths)), str(out)], env=env, capture_output=True,
                          text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    got = json.loads(out.read_text())
    (head,) = got["nodes_at_start"]  # GPU types start from 0 nodes: the head alone
    assert got["nodes_at_start"][head]["GPU"] == 0
    widths = {t["resources"].get("GPU", 0) for t in CLUSTER["available_node_types"].values()}
    seen_widths, on_type = set(), {}
    for p in got["placed"]:
        where = p["nodes"]
        # the GPU type each bundle asks for (ray.data.llm / Ray Train add it)
        (asked,) = {k.split(":", 1)[1] for b in p["bundles"] for k in b
                    if k.startswith("accelerator_type:")}
        on_type[p["name"]] = asked
        for replica in p["replicas"]:
            assert head not in replica and all(where[n]["GPU"] > 0 for n in replica), p
            assert {where[n]["type"] for n in replica} == {asked}, p  # no other GPU type
            if p["strategy"] == "STRICT_PACK":  # tensor parallel within one node
                assert len(set(replica)) == 1 and where[replica[0]]["GPU"] in widths
                assert where[replica[0]]["GPU"] >= len(p["bundles"])
            if p["kind"] == "engine" and len(set(replica)) == 1:
                # a one-GPU engine is its actor ("actor"), a wider one a placement group
                seen_widths.add(sum(b.get("GPU", 0) for b in p["bundles"]))
        if p["kind"] == "training":
            (nodes,) = p["replicas"]
            assert asked == "H100"
            # the L40S nodes of the small sources are still up: training passed them by
            assert p["types_up"] == ["H100", "L40S"], p
            if p["name"] == "llama-3.1-70b":  # ZeRO-3: 16 workers over two 8-GPU nodes
                assert len(nodes) == 16 and len(set(nodes)) == 2 and p["strategy"] == "PACK"
            else:  # 8B DDP: 8 workers on one 8-GPU node
                assert len(nodes) == 8 and len(set(nodes)) == 1
                assert p["strategy"] == "STRICT_PACK"
    # the small bracket on L40S, every other engine on H100
    assert {n for n, t in on_type.items() if t == "L40S"} == {
        "source llama-3.1-8b", "source gemma-2-9b", "source qwen2.5-7b", "source falcon3-10b"}
    # every tensor-parallel width of the configs was placed: 1, 4 and 8 GPUs per replica
    assert seen_widths == {1, 4, 8}
    assert {p["name"] for p in got["placed"] if p["kind"] == "training"} == {
        "llama-3.1-8b", "llama-3.1-70b"}
