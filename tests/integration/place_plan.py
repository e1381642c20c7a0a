"""Driver for test_autoscaling.py: joins the fake autoscaling cluster at ADDRESS and places,
for each config in CONFIGS (paths, comma-separated), what its stages ask Ray for, built by
the functions the stages call: each vLLM engine's processor config (`_engine_config`, as
`vllm_processor` builds it) turned into what ray.data.llm's vLLMEngineStage asks Ray for
(its own post_init: a placement group per multi-GPU replica, the actor's own resources for
a one-GPU replica), and each target's
Ray Train `ScalingConfig` (`train_scaling`, as train/driver.py builds it) placed as Ray
Train's worker group places it (a bundle per worker, its placement strategy). Waits for the
autoscaler to add nodes; writes where every bundle landed, each node's GPUs and GPU type,
and which GPU types were up when it landed, to OUT. A process of its own: Ray reads
RAY_AUTH_MODE once per process, and this driver must authenticate to the head.

Usage: python place_plan.py ADDRESS CONFIGS OUT
"""

from __future__ import annotations

import json
import sys

import ray
from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMEngineStage
from ray.train import ScalingConfig
from ray.util import remove_placement_group
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table

from synth_ray.config import load_config
from synth_ray.engines.layout import EngineRun, EngineSpec, laid_out
from synth_ray.engines.processors import _reading_engine
from synth_ray.runtime.cluster import train_scaling


def nodes() -> dict[str, dict]:
    """Alive nodes: GPUs and GPU type (from the accelerator_type:<type> resource)."""
    out = {}
    for n in ray.nodes():
        if n["Alive"]:
            kind = [k.split(":", 1)[1] for k in n["Resources"] if k.startswith("accelerator_type:")]
            out[n["NodeID"]] = {"GPU": n["Resources"].get("GPU", 0),
                                "type": kind[0] if kind else None}
    return out


@ray.remote(num_cpus=0)
class Engine:
    """Stands in for a vLLMEngineStageUDF actor: asks for what it would, says where it is."""

    def node(self) -> tuple[str, dict]:
        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), ctx.get_assigned_resources()


def engine_requests(cfg, specs: list[EngineSpec]) -> list[tuple]:
    """Each engine as its vLLMEngineStage asks Ray for it (the stage's own post_init on the
    processor config `_engine_config` builds): a multi-GPU replica is a placement group
    from ray.data.llm's `_ray_scheduling_strategy_fn`; a one-GPU replica ("uni" executor)
    is the actor itself, with the bundle's resources and the accelerator type."""
    out = []
    for spec in specs:
        spec, _ = laid_out(EngineRun.of(cfg), spec)
        built = _reading_engine(EngineRun.of(cfg), spec)
        stage = vLLMEngineStage(
            fn_constructor_kwargs={"engine_kwargs": dict(built.engine_kwargs),
                                   "placement_group_config": dict(built.placement_group_config)},
            map_batches_kwargs={"accelerator_type": built.accelerator_type})
        mb = stage.map_batches_kwargs
        if "ray_remote_args_fn" in mb:
            def make(fn=mb["ray_remote_args_fn"]):
                return fn()["scheduling_strategy"].placement_group
        else:
            opts = {k: mb[k] for k in ("num_cpus", "num_gpus", "accelerator_type",
                                       "resources") if mb.get(k)}

            def make(opts=opts):
                return Engine.options(**opts).remote()
        shape = (spec.model, spec.tensor_parallel_size, spec.pipeline_parallel_size,
                 built.accelerator_type, built.concurrency)
        out.append(("engine", spec.name, make, built.concurrency, shape))
    return out


def train_requests(cfg) -> list[tuple]:
    out = []
    for t in cfg.targets:
        sc = ScalingConfig(**train_scaling(cfg, t))

        def make(sc=sc):  # as Ray Train's worker group places its workers
            return placement_group([sc._resources_per_worker_not_none] * sc.num_workers,
                                   strategy=sc.placement_strategy)

        out.append(("training", t.name, make, 1, None))
    return out


def stage_requests(cfg) -> list[tuple[str, list[tuple]]]:
    targets = [EngineSpec.of(f"target {t.name}", t.model, t.revision, t.trust_remote_code,
                             t.engine) for t in cfg.targets]
    sources = [EngineSpec.of_source(s) for s in cfg.sources if s.backend == "vllm"]
    return [("generate", engine_requests(cfg, sources)), ("train", train_requests(cfg)),
            ("respond", engine_requests(cfg, targets)),
            ("judge", engine_requests(cfg, [EngineSpec.of_judge(cfg.judge)]))]


def placed(handles: list) -> tuple[list[dict], str, list[list[str]]]:
    """(bundles asked for, strategy, each replica's nodes) of placement groups or actors,
    once all are placed."""
    if isinstance(handles[0], PlacementGroup):
        ray.get([pg.ready() for pg in handles], timeout=240)
        tables = [placement_group_table(pg) for pg in handles]
        return (list(tables[0]["bundles"].values()), tables[0]["strategy"],
                [[t["bundles_to_node_id"][i] for i in range(len(t["bundles"]))]
                 for t in tables])
    got = ray.get([a.node.remote() for a in handles], timeout=240)
    return [got[0][1]], "actor", [[n] for n, _ in got]


def main(address: str, configs: str, out_path: str) -> None:
    ray.init(address=address, log_to_driver=False)
    out = {"nodes_at_start": nodes(), "placed": []}
    seen = set()
    for path in configs.split(","):
        # a number for the context: "model" (the paper configs') reads each hub model's own
        # config.json, not here offline; the context does not change what Ray is asked for
        cfg = load_config(path, ["generation.max_model_len=4096"])
        for stage, requests in stage_requests(cfg):
            for kind, who, make, replicas, shape in requests:
                # the same engine in both configs (their sources, their judge) lands alike:
                # each once; trainings always
                if shape is not None and shape in seen:
                    continue
                seen.add(shape)
                handles = []
                try:
                    handles += [make() for _ in range(replicas)]  # every replica at once
                    bundles, strategy, where = placed(handles)
                    up = nodes()
                finally:
                    for h in handles:
                        if isinstance(h, PlacementGroup):
                            remove_placement_group(h)
                        else:
                            ray.kill(h)
                out["placed"].append({
                    "config": cfg.run.name, "stage": stage, "kind": kind, "name": who,
                    "bundles": bundles, "strategy": strategy,
                    "replicas": where, "nodes": {n: up[n] for r in where for n in r},
                    "types_up": sorted({v["type"] for v in up.values() if v["type"]})})
                print(f"placed {cfg.run.name} {stage} {who}: "
                      f"{[[up[n]['type'] for n in r] for r in where]}", flush=True)
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
