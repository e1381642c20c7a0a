"""Short LoRA runs of the tiny target through the project's training loop, in a process
group of 1 or 2 CPU workers (gloo), for test_accumulation.py: each case names its micro-batch,
accumulation and strategy, and the run leaves its adapter, lr and loss per optimizer step.
Started with torch.multiprocessing (one process per rank): DeepSpeed and DDP need a process
group, which must not outlive the case in pytest's own process."""

from __future__ import annotations

import os

import torch

from synth_ray.config import TargetSection, TrainingSection
from synth_ray.train.data import IGNORE, collate
from synth_ray.train.deepspeed import zero3_config
from synth_ray.train.loop import LoopSettings, TrainState, plan_steps, run_loop
from synth_ray.train.recipe import build_stepper

N_EXAMPLES = 20  # micro-batches of 8 on one worker: 8, 8, 4 -> the epoch's last step is short
EPOCHS = 2


def examples() -> list[dict[str, list[int]]]:
    import random

    rng = random.Random(3)
    out = []
    for _ in range(N_EXAMPLES):
        length, prompt = rng.randint(5, 40), rng.randint(1, 4)
        ids = [rng.randrange(3, 2000) for _ in range(length)]
        out.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return out


def lora_model(path: str):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from synth_ray.config import LoRASection
    from synth_ray.train.lora import peft_config

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                attn_implementation="sdpa")
    # no dropout: its masks follow the batch layout, which the cases change on purpose
    model = get_peft_model(base, peft_config(LoRASection(dropout=0.0)))
    with torch.no_grad():  # LoRA B starts at zero: give it values, so gradients reach A too
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model


def run_case(path: str, case: dict, rank: int, world: int) -> dict:
    from torch.utils.data import DataLoader, DistributedSampler

    tr = TrainingSection(learning_rate=2e-3, warmup_ratio=0.2, epochs=EPOCHS, dtype="float32",
                         weight_decay=0.0, zero3_param_persistence_threshold=0)
    micro, accum = case["micro"], case["accum"]
    target = TargetSection(name="t", model=path, strategy=case["strategy"], num_workers=world,
                           per_device_batch_size=micro,
                           effective_batch_size=micro * accum * world)
    ex = examples()
    sampler = DistributedSampler(ex, num_replicas=world, rank=rank, shuffle=True, seed=1)
    loader = DataLoader(ex, batch_size=micro, sampler=sampler,
                        collate_fn=lambda b: collate(b, pad_id=0))
    plan = plan_steps(len(ex), micro, world, accum, tr.epochs, tr.warmup_ratio)
    model = lora_model(path)
    zero3 = case["strategy"] == "deepspeed"
    ds_cfg = zero3_config(tr, target, accum) if zero3 else None
    wrap = None if zero3 or world == 1 else torch.nn.parallel.DistributedDataParallel
    stepper, _, _ = build_stepper(model, tr, plan, ds_cfg, wrap=wrap)
    settings = LoopSettings(device="cpu", eval_every=1000, patience=5, n_params=1)
    state = run_loop(stepper, loader, sampler, None, plan, TrainState(), settings,
                     report=lambda m, s: None, on_best=lambda: None)
    named = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
    if zero3:
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
            lora = {n: p.detach().clone() for n, p in named}
    else:
        lora = {n: p.detach().clone() for n, p in named}
    engine_steps = stepper.model.global_steps if zero3 else None
    return {"lora": lora, "lr": [h["lr"] for h in state.history],
            "loss": [h["loss"] for h in state.history], "steps": state.step,
            "total_steps": plan.total_steps, "engine_steps": engine_steps}


def worker(rank: int, world: int, port: int, path: str, cases: list[dict], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = [run_case(path, c, rank, world) for c in cases]
        if rank == 0:
            torch.save(results, out)
        # both ranks done before either tears the group down: a rank that left first
        # aborted the other now and then (SIGABRT, "terminate called without an active
        # exception", once in 10 runs)
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()
