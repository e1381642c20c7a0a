"""The variables a run needs on every node (runtime/node_env.py), checked where they are used:
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
    from synth_ray.engines.node_env_check import register
    from synth_ray.runtime.cluster import CHECK_VAR
    from synth_ray.runtime.node_env import require_here

    monkeypatch.setenv(CHECK_VAR, f"{VAR},HOME")
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(RuntimeError, match=f"^{VAR} not set on node .* \\(vLLM engine\\)"):
        register()
    with pytest.raises(RuntimeError, match=f"^{VAR} not set on node .* \\(Ray Train worker"):
        require_here("Ray Train worker", [VAR])
    monkeypatch.setenv(VAR, VALUE)
    register()  # set: nothing to say


def test_a_node_without_a_trained_model_is_named(tmp_path, monkeypatch) -> None:
    """A model that only a training run builds (a pre-trained `tiny://`): the head has it in
    its cache, the worker node's cache is empty, so a worker there would pre-train its own;
    the check before the first stage names the key and that node only (runtime/node_files.py)."""
    import ray
    from ray.cluster_utils import Cluster

    from synth_ray.config import load_config
    from synth_ray.runtime.node_files import unbuilt_errors
    from synth_ray.toy.pretrain import cached

    monkeypatch.setenv("SYNTH_RAY_CACHE", str(tmp_path / "head-cache"))
    built = cached("pt-reference")  # the head's: as the driver's `prepare` leaves it
    built.mkdir(parents=True)
    (built / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "worker-cache").mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                                                             "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1,
                              env_vars={"SYNTH_RAY_CACHE": str(tmp_path / "worker-cache")})
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        cfg = load_config(DEMO, ["targets.0.model=tiny://pt-reference",
                                 f"resources.ray_address={cluster.address}"])
        errors = unbuilt_errors(cfg)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert len(errors) == 1, errors
    assert re.match(r"targets\.0\.model: tiny://pt-reference is not built on [\d.]+ node "
                    f"{worker.node_id[:8]}, and a worker there would train its own", errors[0])
