"""Driver for test_autoscaling.py: joins the fake autoscaling cluster at ADDRESS and places
what each plan in PLANS (JSON) asks for, one request shape at a time (each engine's replicas
as placement groups of its bundles, each training run as Ray Train's worker group: a bundle
per worker, PACK), waiting for the autoscaler to add nodes; writes where every bundle landed
(node id and that node's GPUs) to OUT. A process of its own: Ray reads RAY_AUTH_MODE once
per process, and this driver must authenticate to the head.

Usage: python place_plan.py ADDRESS PLANS OUT
"""

from __future__ import annotations

import json
import sys

import ray
from ray.util import remove_placement_group
from ray.util.placement_group import placement_group, placement_group_table


def node_gpus() -> dict[str, float]:
    return {n["NodeID"]: n["Resources"].get("GPU", 0) for n in ray.nodes() if n["Alive"]}


def main(address: str, plans_path: str, out_path: str) -> None:
    ray.init(address=address, log_to_driver=False)
    out = {"nodes_at_start": node_gpus(), "placed": []}
    seen = set()
    for name, plan in json.loads(open(plans_path).read()).items():
        for stage in plan["stages"]:
            requests = [("engine", e["name"], e["bundles"], e["strategy"], e["replicas"])
                        for e in stage["engines"]]
            requests += [("training", t["target"], [{"CPU": t["cpus_per_worker"],
                                                     "GPU": t["gpus_per_worker"]}]
                          * t["workers"], "PACK", 1) for t in stage["training"]]
            for kind, who, bundles, strategy, replicas in requests:
                shape = json.dumps([bundles, strategy, replicas])
                if kind == "engine" and shape in seen:
                    continue  # identical requests land alike: each shape once
                seen.add(shape)
                # every replica at once, as Ray Data starts them
                pgs = [placement_group(bundles, strategy=strategy) for _ in range(replicas)]
                try:
                    ray.get([pg.ready() for pg in pgs], timeout=240)
                    gpus = node_gpus()
                    nodes = []
                    for pg in pgs:
                        where = placement_group_table(pg)["bundles_to_node_id"]
                        nodes.append([where[i] for i in range(len(bundles))])
                finally:
                    for pg in pgs:
                        remove_placement_group(pg)
                out["placed"].append({
                    "config": name, "stage": stage["stage"], "kind": kind, "name": who,
                    "bundles": bundles, "strategy": strategy, "replicas": nodes,
                    "node_gpus": {n: gpus[n] for r in nodes for n in r}})
                print(f"placed {name} {stage['stage']} {who}: "
                      f"{[[gpus[n] for n in r] for r in nodes]}", flush=True)
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
