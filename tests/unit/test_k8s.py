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

from synth_ray.config import load_config
from synth_ray.config.uris import is_uri

REPO = Path(__file__).resolve().parents[2]
JOB = yaml.safe_load((REPO / "k8s" / "rayjob.yaml").read_text())
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
SCHEMA = json.loads((REPO / "tests" / "schemas" / "rayjob-v1-spec.schema.json").read_text())


def validate(spec: dict) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(spec)


def unknown_fields(obj, schema: dict, path: str = "spec") -> list[str]:
    """The keys the API server's strict field validation (`kubectl apply
    --validate=strict`) rejects: any not in its object's `properties` where the schema
    allows no others (JSON Schema alone lets them through, and Kubernetes would prune them
    silently: a misspelt `envFrom` would leave a pod without its secrets)."""
    if isinstance(obj, list):
        items = schema.get("items", {})
        return [u for i, x in enumerate(obj) for u in unknown_fields(x, items, f"{path}[{i}]")]
    if not isinstance(obj, dict) or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    props, extra = schema.get("properties"), schema.get("additionalProperties")
    out = []
    for k, v in obj.items():
        if props is not None and k in props:
            out += unknown_fields(v, props[k], f"{path}.{k}")
        elif isinstance(extra, dict):
            out += unknown_fields(v, extra, f"{path}.{k}")
        elif props is not None and extra is not True:
            out.append(f"{path}.{k}")
    return out


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
    # every key is one the CRD knows; a misspelt one (JSON Schema would let it pass) is named
    assert unknown_fields(JOB["spec"], SCHEMA) == []
    broken = copy.deepcopy(JOB["spec"])
    worker = broken["rayClusterSpec"]["workerGroupSpecs"][1]["template"]["spec"]
    worker["containers"][0]["envFrm"] = worker["containers"][0].pop("envFrom")
    broken["shutdownAfterJobFinish"] = True
    validate(broken)
    assert unknown_fields(broken, SCHEMA) == [
        "spec.rayClusterSpec.workerGroupSpecs[1].template.spec.containers[0].envFrm",
        "spec.shutdownAfterJobFinish"]


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


def test_each_worker_group_declares_its_gpu_type_and_the_h100_group_has_efa() -> None:
    """The GPU type the configs' requests name reaches KubeRay's autoscaler from each
    group's rayStartParams (before any pod exists), the same as cluster.yaml's node type of
    that name; the H100 pods get the EFA devices (ZeRO-3 over two nodes)."""
    groups = {g["groupName"]: g for g in JOB["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    for name, g in groups.items():
        declared = json.loads(json.loads(g["rayStartParams"]["resources"]))
        want = {k: v for k, v in CLUSTER["available_node_types"][name]["resources"].items()
                if k.startswith("accelerator_type:")}
        assert declared == want and want, name
    (c,) = groups["gpu-8x-h100"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["vpc.amazonaws.com/efa"] == "32"
    assert {"name": "FI_PROVIDER", "value": "efa"} in c["env"]
