"""Driver for test_autoscaling.py: joins the fake autoscaling cluster at ADDRESS and places,
for each config in CONFIGS (paths, comma-separated), what its stages ask Ray for, built by
the functions the stages call: each vLLM engine's processor config (`_engine_config`, as
`vllm_processor` builds it) turned into its replicas' placement groups by ray.data.llm's
own `_ray_scheduling_strategy_fn` (what a vLLMEngineStage actor runs), and each target's
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
from ray.llm._internal.batch.stages.vllm_engine_stage import _ray_scheduling_strategy_fn
from ray.train import ScalingConfig
from ray.util import remove_placement_group
from ray.util.placement_group import placement_group, placement_group_table

from synth_ray.core.cluster import train_scaling
from synth_ray.core.config import load_config
from synth_ray.engines.processors import EngineSpec, _reading_engine, laid_out
from synth_ray.stages.judge import judge_spec


def nodes() -> dict[str, dict]:
    """Alive nodes: GPUs and GPU type (from the accelerator_type:<type> resource)."""
    out = {}
    for n in ray.nodes():
        if n["Alive"]:
            kind = [k.split(":", 1)[1] for k in n["Resources"] if k.startswith("accelerator_type:")]
            out[n["NodeID"]] = {"GPU": n["Resources"].get("GPU", 0),
                                "type": kind[0] if kind else None}
    return out


def engine_requests(cfg, specs: list[EngineSpec]) -> list[tuple]:
    out = []
    for spec in specs:
        spec, _ = laid_out(cfg, spec)
        built = _reading_engine(cfg, spec)
        n = spec.tensor_parallel_size * spec.pipeline_parallel_size

        def make(built=built, n=n):
            strategy = _ray_scheduling_strategy_fn(n, built.accelerator_type,
                                                   built.placement_group_config)
            return strategy["scheduling_strategy"].placement_group

        out.append(("engine", spec.name, make, built.concurrency))
    return out


def train_requests(cfg) -> list[tuple]:
    out = []
    for t in cfg.targets:
        sc = ScalingConfig(**train_scaling(cfg, t))

        def make(sc=sc):  # as Ray Train's worker group places its workers
            return placement_group([sc._resources_per_worker_not_none] * sc.num_workers,
                                   strategy=sc.placement_strategy)

        out.append(("training", t.name, make, 1))
    return out


def stage_requests(cfg) -> list[tuple[str, list[tuple]]]:
    targets = [EngineSpec.of(f"target {t.name}", t.model, t.revision, t.trust_remote_code,
                             t.engine) for t in cfg.targets]
    sources = [EngineSpec.of_source(s) for s in cfg.sources if s.backend == "vllm"]
    return [("generate", engine_requests(cfg, sources)), ("train", train_requests(cfg)),
            ("respond", engine_requests(cfg, targets)),
            ("judge", engine_requests(cfg, [judge_spec(cfg)]))]


def main(address: str, configs: str, out_path: str) -> None:
    ray.init(address=address, log_to_driver=False)
    out = {"nodes_at_start": nodes(), "placed": []}
    for path in configs.split(","):
        cfg = load_config(path)
        for stage, requests in stage_requests(cfg):
            for kind, who, make, replicas in requests:
                pgs = [make() for _ in range(replicas)]  # every replica at once, as Ray Data
                try:
                    ray.get([pg.ready() for pg in pgs], timeout=240)
                    up = nodes()
                    where = []
                    for pg in pgs:
                        table = placement_group_table(pg)
                        where.append([table["bundles_to_node_id"][i]
                                      for i in range(len(table["bundles"]))])
                    bundles, strategy = table["bundles"], table["strategy"]
                finally:
                    for pg in pgs:
                        remove_placement_group(pg)
                out["placed"].append({
                    "config": cfg.run.name, "stage": stage, "kind": kind, "name": who,
                    "bundles": list(bundles.values()), "strategy": strategy,
                    "replicas": where, "nodes": {n: up[n] for r in where for n in r},
                    "types_up": sorted({v["type"] for v in up.values() if v["type"]})})
                print(f"placed {cfg.run.name} {stage} {who}: "
                      f"{[[up[n]['type'] for n in r] for r in where]}", flush=True)
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
