"""k8s/rayjob.yaml: a RayJob that KubeRay accepts (its spec against the RayJob CRD's schema,
vendored in tests/schemas/), with token auth, the image and node shapes of cluster.yaml, and
a bucket run directory."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from synth_ray.core.config import load_config
from synth_ray.core.storage import is_uri

REPO = Path(__file__).resolve().parents[2]
JOB = yaml.safe_load((REPO / "k8s" / "rayjob.yaml").read_text())
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
SCHEMA = json.loads((REPO / "tests" / "schemas" / "rayjob-v1-spec.schema.json").read_text())


def validate(spec: dict) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(spec)


def containers(spec: dict) -> list[dict]:
    rc = spec["rayClusterSpec"]
    pods = [rc["headGroupSpec"]["template"]] + [g["template"] for g in rc["workerGroupSpecs"]]
    return [c for p in pods for c in p["spec"]["containers"]]


def test_rayjob_matches_the_crd_schema_and_a_broken_one_does_not() -> None:
    assert JOB["apiVersion"] == "ray.io/v1" and JOB["kind"] == "RayJob"
    validate(JOB["spec"])
    broken = copy.deepcopy(JOB["spec"])
    broken["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    with pytest.raises(jsonschema.ValidationError, match="eight"):
        validate(broken)
    broken = copy.deepcopy(JOB["spec"])
    broken["rayClusterSpec"]["authOptions"]["mode"] = "password"
    with pytest.raises(jsonschema.ValidationError, match="password"):
        validate(broken)


def test_rayjob_is_the_cluster_yaml_cluster_with_token_auth_and_a_bucket_run() -> None:
    import ray

    spec = JOB["spec"]
    rc = spec["rayClusterSpec"]
    assert rc["authOptions"]["mode"] == "token" and rc["enableInTreeAutoscaling"]
    assert rc["rayVersion"] == ray.__version__  # the image's Ray = the pinned one
    assert {c["image"] for c in containers(spec)} == {CLUSTER["docker"]["image"]}
    assert rc["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # nothing on the head
    types = {n: t for n, t in CLUSTER["available_node_types"].items() if t["resources"].get("GPU")}
    groups = {g["groupName"]: g for g in rc["workerGroupSpecs"]}
    assert groups.keys() == types.keys()
    for name, g in groups.items():
        (c,) = g["template"]["spec"]["containers"]
        gpus = int(c["resources"]["limits"]["nvidia.com/gpu"])
        assert gpus == types[name]["resources"]["GPU"] and g["minReplicas"] == 0
        assert g["maxReplicas"] == types[name]["max_workers"]
    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["python", "/home/ray/synth-ray/jobs/pipeline.py"]
    config = args[2].replace("/home/ray/synth-ray", str(REPO))
    cfg = load_config(config, args[3:])  # a valid config with these overrides
    assert is_uri(cfg.run.dir) and cfg.resources.accelerator == "cuda"
    # every Ray container, head and each worker group, has the variables the run needs on
    # every node (HF_TOKEN, API keys) from one Secret: no pod starts without it
    assert "HF_TOKEN" in cfg.resources.node_env
    assert [c.get("envFrom") for c in containers(spec)] == [
        [{"secretRef": {"name": "synth-ray-node-env"}}]] * (1 + len(groups))
