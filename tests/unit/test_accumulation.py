"""Gradient accumulation is defined by the effective batch: accumulating micro-batches on one
worker, or spreading them over workers, trains the adapter that one big micro-batch trains,
with the same learning rate at every optimizer step and the same step count, under plain
PyTorch (DDP) and DeepSpeed ZeRO-3; a short last group of an epoch included (20 examples in
steps of 8: 8, 8, 4)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from synth_ray import models

from ..integration.helpers import free_port
from . import accum_run

pytestmark = pytest.mark.slow  # process groups and DeepSpeed: ~1 min

REFERENCE = {"micro": 8, "accum": 1, "strategy": "ddp"}
ONE_WORKER = [REFERENCE, {"micro": 4, "accum": 2, "strategy": "ddp"},
              {"micro": 2, "accum": 4, "strategy": "ddp"},
              {"micro": 4, "accum": 2, "strategy": "deepspeed"}]
TWO_WORKERS = [{"micro": 4, "accum": 1, "strategy": "ddp"},
               {"micro": 2, "accum": 2, "strategy": "ddp"},
               {"micro": 2, "accum": 2, "strategy": "deepspeed"}]


def run(world: int, cases: list[dict], tmp_path) -> list[dict]:
    out = tmp_path / f"world{world}.pt"
    path = models.resolve_model("tiny://target")
    mp.spawn(accum_run.worker, args=(world, free_port(), path, cases, str(out)), nprocs=world,
             join=True)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("accum")
    got = {}
    for world, cases in ((1, ONE_WORKER), (2, TWO_WORKERS)):
        for case, r in zip(cases, run(world, cases, tmp)):
            got[f"world{world}-micro{case['micro']}-accum{case['accum']}-{case['strategy']}"] = r
    return got


def test_every_layout_of_the_effective_batch_trains_the_same_adapter(results) -> None:
    ref = results.pop("world1-micro8-accum1-ddp")
    # 20 examples, 8 per step: 3 steps an epoch (the last of 4), 2 epochs
    assert ref["steps"] == ref["total_steps"] == 6
    assert len(results) == 6
    for name, r in results.items():
        assert r["steps"] == r["total_steps"] == ref["steps"], name
        assert r["lr"] == pytest.approx(ref["lr"], rel=1e-12), name  # lr per optimizer step
        # the loss of each step: the token mean over the whole effective batch
        assert r["loss"] == pytest.approx(ref["loss"], rel=1e-4), name
        assert r["lora"].keys() == ref["lora"].keys()
        for k, t in ref["lora"].items():  # Adam amplifies float noise: ~1e-6
            torch.testing.assert_close(r["lora"][k], t, rtol=1e-3, atol=2e-5, msg=f"{name} {k}")
        if r["engine_steps"] is not None:  # DeepSpeed stepped where the loop counted a step
            assert r["engine_steps"] == ref["steps"], name
