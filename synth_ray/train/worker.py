"""The function every Ray Train worker runs: the run's adapters one after the other (one
per run unless `training.adapters_per_run` says more), each a LoRA adapter for one (target,
condition, seed), or, with `job["full"]`, full fine-tuning of every weight (how the tiny
pre-trained family learns its corpora: `synth_ray/toy/pretrain.py`). DDP through
`ray.train.torch.prepare_model`, or DeepSpeed ZeRO-3; checkpoints hold the trained weights,
optimizer, schedule and loop state and name their adapter, so a replaced worker resumes that
adapter where the last checkpoint left off and skips the ones saved before it."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import torch

from synth_ray.core.config import ExperimentConfig
from synth_ray.core.storage import read_parquet, scratch_dir, upload_tree
from synth_ray.core.tracking import worker_session
from synth_ray.train import board
from synth_ray.train.data import LengthGroupedSampler, collate, encode_rows
from synth_ray.train.deepspeed import gathered, zero3_config
from synth_ray.train.loop import (
    DeepSpeedStep,
    LoopSettings,
    TorchStep,
    TrainState,
    build_optimizer,
    build_scheduler,
    plan_steps,
    run_loop,
)
from synth_ray.train.lora import peft_config, save_adapter, save_full_model
from synth_ray.train.padding_free import collate_padding_free, keeps_sequences_apart

FULL_VERSION = 2  # part of the pre-trained models' cache key: bump when full training changes

# Test-only fault injection: "RANK:STEP:MARKER" makes that rank die once at that step (of
# the adapter whose run name FAULT_ADAPTER_ENV gives, if set).
FAULT_ENV = "SYNTH_RAY_TEST_KILL_WORKER"
FAULT_ADAPTER_ENV = "SYNTH_RAY_TEST_KILL_ADAPTER"


def _fault_hook(rank: int, adapter: str):
    spec = os.environ.get(FAULT_ENV)
    if not spec or os.environ.get(FAULT_ADAPTER_ENV, adapter) != adapter:
        return None
    want_rank, want_step, marker = spec.split(":", 2)

    def hook(step: int) -> None:
        if rank == int(want_rank) and step == int(want_step) and not Path(marker).exists():
            Path(marker).write_text(f"killed rank {rank} at step {step}\n")
            os._exit(1)

    return hook


def _examples(job, tokenizer, cfg) -> tuple[list, list]:
    """The tokenized training and validation examples of the job's dataset."""
    rows = read_parquet(job["dataset"])  # a path, or a URI for a run in a bucket
    enc = functools.partial(encode_rows, tokenizer, system_prompt=cfg.training_system_prompt(),
                            max_length=cfg.training.max_length, loss_on=cfg.training.loss_on)
    train = enc(rows.filter(pl.col("split") == "train").to_dicts())
    val = enc(rows.filter(pl.col("split") == "validation").to_dicts())
    if not train:
        raise ValueError(f"{job['dataset']}: no training rows left after tokenization")
    return train, val


def _loaders(job, tokenizer, cfg, target, rank: int, world: int, train: list, val: list,
             padding_free: bool):
    from torch.utils.data import DataLoader, DistributedSampler

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    col = collate_padding_free if padding_free else functools.partial(collate, pad_id=pad)
    batch = target.per_device_batch_size
    if cfg.training.group_by_length:
        sampler = LengthGroupedSampler([len(e["input_ids"]) for e in train], batch, world,
                                       rank, job["seed"])
    else:
        sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True,
                                     seed=job["seed"])
    train_loader = DataLoader(train, batch_size=batch, sampler=sampler, collate_fn=col)
    val_loader = None
    if val:
        vs = DistributedSampler(val, num_replicas=world, rank=rank, shuffle=False)
        val_loader = DataLoader(val, batch_size=batch, sampler=vs, collate_fn=col)
    return train_loader, sampler, val_loader


def batching_choices(cfg, model, device, vocab_size: int, zero3: bool,
                     full: bool) -> tuple[bool, int | None, list[str]]:
    """(padding-free, loss chunk, notes): what the config asks for, where this model and
    strategy allow it; each refusal is a note for the log and the training summary."""
    tr, notes = cfg.training, []
    padding_free = tr.padding_free
    if padding_free:  # every rank runs the check (under ZeRO-3 a forward needs them all)
        ok, measured = keeps_sequences_apart(model, device, vocab_size)
        if not ok:
            padding_free = False
            notes.append(f"training.padding_free: this model's attention does not keep "
                         f"packed sequences apart ({measured}); padded batches instead")
    chunk = tr.loss_chunk_tokens
    if chunk and (zero3 or full):
        notes.append("training.loss_chunk_tokens: the model's own loss (full logits) under "
                     + ("ZeRO-3, which partitions lm_head" if zero3 else
                        "full fine-tuning, which trains lm_head"))
        chunk = None
    return padding_free, chunk, notes


def build_stepper(model, tr, plan, ds_cfg: dict[str, Any] | None, wrap=None):
    """(stepper, optimizer, scheduler): AdamW and the schedule, under DeepSpeed when
    `ds_cfg` is given (ZeRO-3), else a plain step over `wrap(model)` (DDP)."""
    optimizer = build_optimizer(model, tr.learning_rate, tr.weight_decay)
    if ds_cfg is not None:
        import deepspeed

        # ZeRO-3 wraps the optimizer; the schedule must be built on the wrapped one
        engine, optimizer, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_cfg,
            lr_scheduler=lambda opt: build_scheduler(opt, tr.scheduler, plan))
        return DeepSpeedStep(engine), optimizer, scheduler
    scheduler = build_scheduler(optimizer, tr.scheduler, plan)
    model = wrap(model) if wrap else model
    return TorchStep(model, optimizer, scheduler, tr.max_grad_norm), optimizer, scheduler


def train_func(run: dict[str, Any]) -> None:
    """A Ray Train run's adapters in order. The latest checkpoint names the adapter it
    belongs to: the ones before it were saved before it began, so they are skipped, as are
    those the driver found saved (`done`)."""
    import ray.train

    from synth_ray.core.node_env import require_here
    from synth_ray.core.node_models import ensure_here
    from synth_ray.models import is_scheme_id

    # a worker on a node without HF_TOKEN (say) fails now, naming it, not in a download
    require_here("Ray Train worker", run["config"].get("resources", {}).get("node_env", []))
    jobs = run["jobs"]
    # a scheme model (tiny://) present on this node, at the driver's path (node_models.py)
    ensure_here("Ray Train worker", {j["model"]: j["model_path"] for j in jobs
                                     if is_scheme_id(j.get("model", ""))})
    names = [j["run_name"] for j in jobs]
    ckpt = ray.train.get_checkpoint()
    first = 0
    if ckpt:
        with ckpt.as_directory() as d:
            adapter = json.loads((Path(d) / "state.json").read_text()).get("adapter") or names[0]
        if adapter in names:
            first = names.index(adapter)
        else:  # the run's storage holds another grid's run: start over, as a new name would
            print(f"checkpoint of adapter {adapter!r}, not one of this run's {names}: ignored")
            ckpt = None
    for i, job in enumerate(jobs):
        if i >= first and not job.get("done"):
            train_adapter(job, ckpt if i == first else None)


def train_adapter(job: dict[str, Any], ckpt) -> None:
    """One adapter (or full fine-tuning), resumed from `ckpt` if given."""
    import ray.train
    import ray.train.torch
    from peft import get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = ExperimentConfig.model_validate(job["config"])
    target = next(t for t in cfg.targets if t.name == job["target"])
    tr = cfg.training
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(job["seed"])
    device = ray.train.torch.get_device()
    zero3 = target.strategy == "deepspeed"

    tokenizer = AutoTokenizer.from_pretrained(job["model_path"],
                                              trust_remote_code=target.trust_remote_code)
    accum = max(1, target.effective_batch_size // (target.per_device_batch_size * world))
    ds_cfg = zero3_config(tr, target, accum) if zero3 else None
    if zero3:  # load the weights already partitioned (a 70B model fits no single worker)
        from transformers.integrations import HfDeepSpeedConfig

        _keep_alive = HfDeepSpeedConfig(ds_cfg)  # noqa: F841 - must live while loading
    model = AutoModelForCausalLM.from_pretrained(
        job["model_path"], dtype=getattr(torch, tr.dtype),
        trust_remote_code=target.trust_remote_code)
    if target.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    full = bool(job.get("full"))
    if not full:
        model = get_peft_model(model, peft_config(cfg.lora))
    vocab_size = model.config.vocab_size
    train, val = _examples(job, tokenizer, cfg)
    plan = plan_steps(len(train), target.per_device_batch_size, world, accum, tr.epochs,
                      tr.warmup_ratio, tr.max_steps)
    unwrapped = model  # the PEFT (or plain) model, before DDP or DeepSpeed wrap it
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    # the weights this run trains (and checkpoints): the LoRA matrices, or all of them
    trained_named = [(n, p) for n, p in model.named_parameters()
                     if full or "lora_" in n]
    trained_params = [p for _, p in trained_named]
    stepper, optimizer, scheduler = build_stepper(model, tr, plan, ds_cfg,
                                                  wrap=ray.train.torch.prepare_model)
    padding_free, loss_chunk, notes = batching_choices(cfg, stepper.model, device, vocab_size,
                                                       zero3, full)
    for note in notes:  # no silent fallback: in the worker's log and the training summary
        print(f"[train] {job['run_name']}: {note}")
    train_loader, sampler, val_loader = _loaders(job, tokenizer, cfg, target, rank, world,
                                                 train, val, padding_free)

    def trained_state() -> dict[str, torch.Tensor]:
        with gathered(trained_params, zero3):
            return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in trained_named}

    state, best = TrainState(adapter=job["run_name"]), None
    resumed_from = 0
    if ckpt:
        with ckpt.as_directory() as d:
            d = Path(d)
            state = TrainState.from_dict(json.loads((d / "state.json").read_text()))
            resumed_from = state.step
            if (d / "best.safetensors").exists():
                best = load_file(str(d / "best.safetensors"))
            if zero3:
                stepper.model.load_checkpoint(str(d / "deepspeed"))
            else:
                current = load_file(str(d / "adapter.safetensors"))
                with torch.no_grad():
                    for n, p in trained_named:
                        p.copy_(current[n].to(p.device))
                optimizer.load_state_dict(torch.load(d / "optimizer.pt", weights_only=True))
                scheduler.load_state_dict(torch.load(d / "scheduler.pt", weights_only=True))

    def on_best() -> None:
        nonlocal best
        best = trained_state()

    tracked = worker_session(job.get("tracking"), {
        "condition": job["condition"], "seed": job["seed"], "target": target.name,
        "model": target.model, "world_size": world, "grad_accum": accum,
        "total_steps": plan.total_steps, "train_examples": len(train),
        **{f"training.{k}": v for k, v in tr.model_dump().items()},
        **{f"lora.{k}": v for k, v in cfg.lora.model_dump().items()}})
    if tracked is not None:  # resumed: the steps before the checkpoint again, in case the
        for metrics in state.history:  # killed worker's last lines never reached the backend
            tracked.log_step(metrics)

    def report(metrics: dict[str, float], save: bool) -> None:
        if rank == 0:
            board.post(job.get("board"), job["run_name"], int(metrics["step"]),
                       plan.total_steps)
        if not save:
            ray.train.report(metrics)
            return
        current = trained_state() if rank == 0 and not zero3 else None  # DDP: replicas agree
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            if zero3:  # every rank writes its own shard; Ray Train merges the folders
                stepper.model.save_checkpoint(str(d / "deepspeed"))
            if rank == 0:
                (d / "state.json").write_text(json.dumps(state.to_dict()))
                if best is not None:
                    save_file(best, str(d / "best.safetensors"))
                if not zero3:
                    save_file(current, str(d / "adapter.safetensors"))
                    torch.save(optimizer.state_dict(), d / "optimizer.pt")
                    torch.save(scheduler.state_dict(), d / "scheduler.pt")
            keep = rank == 0 or zero3
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(d))
                             if keep else None)

    settings = LoopSettings(device=device, eval_every=tr.eval_every_steps,
                            patience=tr.early_stopping_patience, n_params=n_params,
                            report_every=tr.report_every_steps, autocast=tr.autocast,
                            loss_chunk=loss_chunk)
    state = run_loop(stepper, train_loader, sampler, val_loader, plan, state, settings,
                     report=report, on_best=on_best,
                     fault_hook=_fault_hook(rank, job["run_name"]),
                     on_step=tracked and tracked.log_step)
    final = best if best is not None else trained_state()
    if tracked is not None:
        tracked.log_final({"best_val_loss": state.best_val, "best_step": state.best_step,
                           "steps": state.step, "stopped_early": float(state.stopped_early)})
        tracked.end()
    if rank == 0:
        summary = {"target": target.name, "condition": job["condition"], "seed": job["seed"],
                   "job_hash": job.get("job_hash"),
                   "steps": state.step, "total_steps": plan.total_steps,
                   "best_step": state.best_step, "best_val_loss": state.best_val,
                   "stopped_early": state.stopped_early, "train_examples": len(train),
                   "world_size": world, "grad_accum": accum, "strategy": target.strategy,
                   "resumed_from_step": resumed_from, "padding_free": padding_free,
                   "loss_chunk_tokens": loss_chunk, "group_by_length": tr.group_by_length,
                   "batching_notes": notes, "history": state.history}
        # a run in a bucket: saved here (checked, complete), then uploaded for the driver
        out = scratch_dir("adapter-") / "adapter" if job.get("output_uri") else job["output"]
        if full:
            save_full_model(unwrapped, tokenizer, out, state_dict=final, extra=summary)
        else:
            save_adapter(unwrapped, out, state_dict=final, extra=summary)
        if job.get("output_uri"):
            upload_tree(out, job["output_uri"])
            shutil.rmtree(Path(out).parent, ignore_errors=True)
    if zero3:  # the run's next adapter builds an engine of its own: release this one's
        stepper.model.destroy()  # optimizer partitions and ZeRO-3 hooks now, not at exit
