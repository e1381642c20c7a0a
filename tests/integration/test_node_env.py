"""The variables a run needs on every node (core/node_env.py), checked where they are used:
a cluster of two nodes (ray.cluster_utils) whose worker node lacks one; `synth-ray run`
joining it exits 2 before the first stage, naming the variable and that node, never its
value. An engine process and a training worker check it again at their start."""

from __future__ import annotations

import re

import pytest

from .helpers import DEMO, cli_env, run_cli

pytestmark = pytest.mark.slow
VAR = "SYNTH_RAY_TEST_NODE_TOKEN"
VALUE = "secret-value-4711"


@pytest.fixture
def two_nodes(monkeypatch):
    """A head (this test's environment, VAR set) and a worker node whose raylet, and so
    every worker process on it, has VAR empty."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv(VAR, VALUE)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                             "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, env_vars={VAR: ""})
    try:
        cluster.wait_for_nodes()
        yield cluster.address, worker.node_id
    finally:
        cluster.shutdown()


def test_a_node_without_the_variable_stops_the_run_before_any_stage(two_nodes,
                                                                    tmp_path) -> None:
    address, worker = two_nodes
    run_dir = tmp_path / "run"
    proc = run_cli("run", str(DEMO), f"run.dir={run_dir}", f"resources.ray_address={address}",
                   "run.shared_mount=true", "resources.accelerator=cpu",
                   f"resources.node_env=[{VAR}]", env=cli_env(**{VAR: VALUE}), timeout=300)
    text = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, text[-3000:]
    assert re.search(f"{VAR} is not set on [\\d.]+ node {worker[:8]} ", text), text[-3000:]
    assert text.count(f"{VAR} is not set") == 1  # the head has it
    assert VALUE not in text and VALUE not in (run_dir / "log.txt").read_text()
    assert not (run_dir / "splits").exists()  # no stage ran


def test_an_engine_or_worker_without_the_variable_fails_naming_it(monkeypatch) -> None:
    from synth_ray.core.node_env import CHECK_VAR, require_here
    from synth_ray.engines.node_env_check import register

    monkeypatch.setenv(CHECK_VAR, f"{VAR},HOME")
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(RuntimeError, match=f"^{VAR} not set on node .* \\(vLLM engine\\)"):
        register()
    with pytest.raises(RuntimeError, match=f"^{VAR} not set on node .* \\(Ray Train worker"):
        require_here("Ray Train worker", [VAR])
    monkeypatch.setenv(VAR, VALUE)
    register()  # set: nothing to say
