"""GPU types (issue 29, item 5): every GPU request names the type it needs, so on a fleet of
L40S and H100 nodes training never lands on the L40S; a group that fits one node is packed
STRICT on it; `plan` sizes each request by its type's memory and node width and prices it,
and counts the weights ZeRO-3 gathers between nodes. cluster.yaml's node types declare the
types the configs ask for; test_autoscaling places the requests on them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synth_ray.config import ConfigError, load_config
from synth_ray.config.model_sections import DEFAULT_GPU_TYPES
from synth_ray.plan import make_plan
from synth_ray.runtime.cluster import engine_bundles, engine_placement, train_scaling

REPO = Path(__file__).resolve().parents[2]
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())


def paper(name: str, *overrides: str):
    return load_config(REPO / "jobs" / "configs" / name, list(overrides))


def test_cluster_yaml_node_types_declare_the_gpu_types_the_config_knows() -> None:
    seen = {}
    for name, t in CLUSTER["available_node_types"].items():
        gpus = t["resources"].get("GPU", 0)
        types = [k.split(":", 1)[1] for k in t["resources"] if k.startswith("accelerator_type:")]
        assert bool(types) == bool(gpus), name  # every GPU type named, no CPU node typed
        if gpus:
            (kind,) = types
            assert gpus == DEFAULT_GPU_TYPES[kind].gpus_per_node, name
            seen[kind] = t
    assert set(seen) == set(DEFAULT_GPU_TYPES) == {"H100", "L40S"}
    # EFA on the H100 nodes: an EFA interface per network card, the devices in the container
    h100 = seen["H100"]
    cards = h100["node_config"]["NetworkInterfaces"]
    assert len(cards) == 32 and {c["NetworkCardIndex"] for c in cards} == set(range(32))
    assert all(c["InterfaceType"] in ("efa", "efa-only") for c in cards)
    assert cards[0]["DeviceIndex"] == 0 and cards[0]["InterfaceType"] == "efa"
    assert "--device=/dev/infiniband" in h100["docker"]["worker_run_options"]
    assert "efa_installer.sh" in (REPO / "docker" / "Dockerfile").read_text()


def test_training_asks_for_its_gpu_type_and_one_node_when_it_fits() -> None:
    small = paper("paper-8b.yaml")  # 8 DDP workers: one 8-GPU H100 node
    assert train_scaling(small, small.targets[0]) == {
        "num_workers": 8, "use_gpu": True, "resources_per_worker": {"CPU": 1, "GPU": 1},
        "accelerator_type": "H100", "placement_strategy": "STRICT_PACK"}
    big = paper("paper-70b.yaml")  # ZeRO-3 on 16: two nodes, packed
    got = train_scaling(big, big.targets[0])
    assert got["accelerator_type"] == "H100" and got["placement_strategy"] == "PACK"
    # the target's own type over the default; any GPU when none is named anywhere
    own = paper("paper-8b.yaml", "targets.0.accelerator_type=L40S", "targets.0.num_workers=1",
                "targets.0.effective_batch_size=4")
    assert train_scaling(own, own.targets[0])["accelerator_type"] == "L40S"
    anyg = paper("paper-8b.yaml", "resources.accelerator_type=null")
    assert "accelerator_type" not in train_scaling(anyg, anyg.targets[0])
    # a CPU target asks for no GPU type
    demo = paper("demo.yaml")
    assert train_scaling(demo, demo.targets[0])["placement_strategy"] == "PACK"
    assert "accelerator_type" not in train_scaling(demo, demo.targets[0])


def test_the_scaling_config_ray_train_gets_asks_for_the_type_on_every_worker() -> None:
    from ray.train import ScalingConfig

    cfg = paper("paper-8b.yaml")
    sc = ScalingConfig(**train_scaling(cfg, cfg.targets[0]))
    # what Ray Train's worker group places: these bundles, this strategy
    assert sc._resources_per_worker_not_none == {"CPU": 1, "GPU": 1,
                                                 "accelerator_type:H100": 0.001}
    assert sc.placement_strategy == "STRICT_PACK"


def test_an_engine_group_that_fits_one_node_never_straddles_two() -> None:
    assert engine_bundles(2, 2, True, 8)["strategy"] == "STRICT_PACK"  # 4 GPUs, pp 2
    assert engine_bundles(4, 4, True, 8)["strategy"] == "PACK"  # 16 GPUs, pp 4: two nodes
    assert engine_bundles(16, 1, True, 8)["strategy"] == "STRICT_PACK"  # TP never straddles
    assert engine_bundles(8, 1, True, 8)["strategy"] == "STRICT_PACK"
    cfg = paper("paper-8b.yaml")
    assert engine_placement(cfg.resources, 1, 1, "L40S", True)["accelerator_type"] == "L40S"
    assert engine_placement(cfg.resources, 1, 1, None, True)["accelerator_type"] == "H100"
    assert engine_placement(cfg.resources, 1, 1, "L40S", False) == {
        "bundles": [{"CPU": 1}], "strategy": "PACK", "accelerator_type": None}
    # tensor parallel stays on one node even where it cannot fit one (an L40S node has one
    # GPU): the plan refuses it, naming the key, instead of straddling two nodes
    assert engine_placement(cfg.resources, 2, 1, "L40S", True)["strategy"] == "STRICT_PACK"
    wide = paper("paper-8b.yaml", "sources.0.tensor_parallel_size=2")
    assert "generate: sources.0 needs 2 GPU(s) on one node; the largest node has 1" in \
        make_plan(wide)["problems"]


def test_an_unknown_gpu_type_is_refused_naming_its_key() -> None:
    with pytest.raises(ConfigError, match=r"sources\.2\.accelerator_type: unknown GPU type "
                                          r"'A10G'"):
        paper("paper-8b.yaml", "sources.2.accelerator_type=A10G")
    with pytest.raises(ConfigError, match=r"targets\.0\.accelerator_type: unknown GPU type"):
        paper("paper-8b.yaml", "targets.0.accelerator_type=h100")


def test_plan_sizes_each_request_by_its_type_and_prices_it() -> None:
    cfg = paper("paper-8b.yaml")
    plan = make_plan(cfg)
    rows = {e["name"]: e for s in plan["stages"] for e in s["engines"]}
    small, judge = rows["source llama-3.1-8b"], rows["judge"]
    assert small["accelerator_type"] == "L40S" and judge["accelerator_type"] == "H100"
    assert small["gpu_memory_gib"] == pytest.approx(48 * 0.9, abs=0.1)  # one L40S
    assert judge["gpu_memory_gib"] == pytest.approx(4 * 80 * 0.9, abs=0.1)  # four H100
    # a 19 GiB model on one 24 GiB GPU type does not fit: named by key
    tight = paper("paper-8b.yaml", "resources.gpu_types.L40S.memory_gib=24")
    assert any(p.startswith("sources.3: tiiuae/Falcon3-10B-Instruct needs ~19 GiB")
               for p in make_plan(tight)["problems"])
    # dollars move with each type's own price, and only with it
    assert plan["gpu_usd"] > 0 and plan["unpriced_gpu_hours"] == 0
    cheap_l40s = make_plan(paper("paper-8b.yaml", "resources.gpu_types.L40S.usd_per_gpu_hour=0"))
    generate = next(s for s in plan["stages"] if s["stage"] == "generate")
    l40s_hours = sum(e["gpu_hours"] for e in generate["engines"]
                     if e["accelerator_type"] == "L40S")
    assert l40s_hours > 0
    price = DEFAULT_GPU_TYPES["L40S"].usd_per_gpu_hour
    assert plan["gpu_usd"] - cheap_l40s["gpu_usd"] == pytest.approx(l40s_hours * price,
                                                                    abs=0.05)
    free = make_plan(paper("paper-8b.yaml", "resources.gpu_types.H100.usd_per_gpu_hour=null"))
    assert free["unpriced_gpu_hours"] == pytest.approx(plan["gpu_hours"] - l40s_hours, abs=0.1)


def test_plan_counts_the_weights_zero3_gathers_between_nodes() -> None:
    def train(*overrides):
        plan = make_plan(paper("paper-70b.yaml", *overrides))
        return next(s for s in plan["stages"] if s["stage"] == "train")["training"][0]

    efa = train()
    assert efa["nodes"] == 2 and efa["zero3_gather_gpu_hours"] > 0
    assert efa["gpu_hours"] > efa["zero3_gather_gpu_hours"]  # compute besides
    # over TCP (10x less bandwidth) the gathers take 10x as long
    tcp = train("resources.gpu_types.H100.node_gbps=320")
    assert tcp["zero3_gather_gpu_hours"] == pytest.approx(10 * efa["zero3_gather_gpu_hours"],
                                                          rel=0.01)
    # without gradient checkpointing: two gathers a micro-batch instead of three
    two = train("targets.0.gradient_checkpointing=false")
    assert two["zero3_gather_gpu_hours"] == pytest.approx(
        efa["zero3_gather_gpu_hours"] * 2 / 3, rel=0.01)
    # over four nodes each node receives 3/4 of the weights per gather instead of 1/2, and
    # 32 workers take half the micro-batches: 1.5 x 0.5 of the two-node time
    four = train("targets.0.num_workers=32", "targets.0.effective_batch_size=128")
    assert four["nodes"] == 4
    assert four["zero3_gather_gpu_hours"] / 32 == pytest.approx(
        0.75 * efa["zero3_gather_gpu_hours"] / 16, rel=0.01)
    # on one node (8 workers) the gathers stay on NVLink: none counted
    one = train("targets.0.num_workers=8")
    assert one["nodes"] == 1 and one["zero3_gather_gpu_hours"] == 0
    assert one["strategy"] == "STRICT_PACK"


def test_a_fixed_cluster_counts_only_the_nodes_of_the_type_a_request_names() -> None:
    from synth_ray.runtime.cluster import resource_problems

    fixed = paper("paper-8b.yaml", "resources.autoscaling=false")
    # an H100 node and four L40S nodes up: the 8 training workers fit the H100 node only
    assert resource_problems(fixed, ["train"], [8, 1, 1, 1, 1],
                             node_types=["H100", "L40S", "L40S", "L40S", "L40S"]) == []
    # eight L40S GPUs but no H100: the training, asking for H100, can never start there
    assert resource_problems(fixed, ["train"], [1] * 8, node_types=["L40S"] * 8) == [
        "train: targets.0.num_workers needs 8 GPU(s) of type H100 "
        "(resources.accelerator_type); the cluster has 0"]
    # types unknown (a cluster that reports none): GPUs counted as before
    assert resource_problems(fixed, ["train"], [1] * 8) == []


def test_a_gpu_type_or_price_changes_no_stage_input() -> None:
    """Where work runs is not what it computes: moving a run to other GPUs (or repricing
    them) leaves every stage's input hash alone, so no finished stage is redone."""
    a = paper("paper-8b.yaml")
    b = paper("paper-8b.yaml", "sources.0.accelerator_type=H100",
              "targets.0.accelerator_type=L40S", "judge.accelerator_type=L40S",
              "resources.gpu_types.H100.usd_per_gpu_hour=1.5")
    assert a.sources[0].hashed() == b.sources[0].hashed()
    assert a.targets[0].hashed() == b.targets[0].hashed()
    assert a.judge.hashed() == b.judge.hashed() and a.resources.hashed() == b.resources.hashed()
    assert a.sources[0] != b.sources[0]  # the configs do differ
