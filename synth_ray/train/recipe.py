"""One adapter's training on a Ray Train worker, as one object shaped like a torchtune
recipe (`recipes/lora_finetune_distributed.py`): a LoRA adapter for one (target, condition,
seed), or, with `job["full"]`, full fine-tuning of every weight. DDP through
`ray.train.torch.prepare_model`, or DeepSpeed ZeRO-3; checkpoints hold the trained weights,
optimizer, schedule and loop state and name their adapter, so a replaced worker resumes it
where the last checkpoint left off (`worker.train_func` picks the adapter)."""

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

from synth_ray.config import ExperimentConfig
from synth_ray.observe.tracking import worker_session
from synth_ray.runtime.storage import read_parquet, scratch_dir, upload_tree
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


class AdapterRun:
    """One adapter's (or full fine-tuning's) run on this worker, shaped like a torchtune
    recipe (`recipes/lora_finetune_distributed.py`): `setup` builds the model, optimizer and
    data, `resume` loads a checkpoint, `train` runs the loop (whose hooks are `report`,
    `checkpoint` and `keep_best`), `finish` saves the adapter and releases the engine. What
    the steps share (the loop state, the best weights) lives on the object."""

    def __init__(self, job: dict[str, Any]):
        import ray.train

        self.job = job
        self.cfg = ExperimentConfig.model_validate(job["config"])
        self.target = next(t for t in self.cfg.targets if t.name == job["target"])
        self.tr = self.cfg.training
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.zero3 = self.target.strategy == "deepspeed"
        self.full = bool(job.get("full"))
        self.state, self.best = TrainState(adapter=job["run_name"]), None
        self.resumed_from = 0
        self.tracked = None

    def setup(self) -> None:
        """The model, its optimizer and schedule, and the data, on this worker."""
        import ray.train.torch

        torch.manual_seed(self.job["seed"])
        self.device = ray.train.torch.get_device()
        self._setup_model()
        self.train_examples, self.val_examples = _examples(self.job, self.tokenizer, self.cfg)
        t, tr = self.target, self.tr
        self.plan = plan_steps(len(self.train_examples), t.per_device_batch_size, self.world,
                               self.accum, tr.epochs, tr.warmup_ratio, tr.max_steps)
        self._setup_optimizer()
        self._setup_data()

    def _setup_model(self) -> None:
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        job, target, tr = self.job, self.target, self.tr
        self.tokenizer = AutoTokenizer.from_pretrained(
            job["model_path"], trust_remote_code=target.trust_remote_code)
        self.accum = max(1, target.effective_batch_size
                         // (target.per_device_batch_size * self.world))
        self.ds_cfg = zero3_config(tr, target, self.accum) if self.zero3 else None
        if self.zero3:  # load the weights already partitioned (a 70B model fits no single worker)
            from transformers.integrations import HfDeepSpeedConfig

            self._keep_alive = HfDeepSpeedConfig(self.ds_cfg)  # must live while loading
        model = AutoModelForCausalLM.from_pretrained(
            job["model_path"], dtype=getattr(torch, tr.dtype),
            trust_remote_code=target.trust_remote_code)
        if target.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        if not self.full:
            model = get_peft_model(model, peft_config(self.cfg.lora))
        self.model = model  # the PEFT (or plain) model, before DDP or DeepSpeed wrap it
        self.vocab_size = model.config.vocab_size

    def _setup_optimizer(self) -> None:
        import ray.train.torch

        model = self.model
        self.n_params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
        # the weights this run trains (and checkpoints): the LoRA matrices, or all of them
        self.trained_named = [(n, p) for n, p in model.named_parameters()
                              if self.full or "lora_" in n]
        self.trained_params = [p for _, p in self.trained_named]
        self.stepper, self.optimizer, self.scheduler = build_stepper(
            model, self.tr, self.plan, self.ds_cfg, wrap=ray.train.torch.prepare_model)

    def _setup_data(self) -> None:
        self.padding_free, self.loss_chunk, self.notes = batching_choices(
            self.cfg, self.stepper.model, self.device, self.vocab_size, self.zero3, self.full)
        for note in self.notes:  # no silent fallback: in the worker's log and the training summary
            print(f"[train] {self.job['run_name']}: {note}")
        self.train_loader, self.sampler, self.val_loader = _loaders(
            self.job, self.tokenizer, self.cfg, self.target, self.rank, self.world,
            self.train_examples, self.val_examples, self.padding_free)

    def trained_state(self) -> dict[str, torch.Tensor]:
        with gathered(self.trained_params, self.zero3):
            return {n: p.detach().to("cpu", copy=True).contiguous()
                    for n, p in self.trained_named}

    def resume(self, ckpt) -> None:
        """The loop state, best weights, trained weights, optimizer and schedule of `ckpt`
        (a Ray Train checkpoint that `checkpoint` wrote), if given."""
        if not ckpt:
            return
        from safetensors.torch import load_file

        with ckpt.as_directory() as d:
            d = Path(d)
            self.state = TrainState.from_dict(json.loads((d / "state.json").read_text()))
            self.resumed_from = self.state.step
            if (d / "best.safetensors").exists():
                self.best = load_file(str(d / "best.safetensors"))
            if self.zero3:
                self.stepper.model.load_checkpoint(str(d / "deepspeed"))
            else:
                current = load_file(str(d / "adapter.safetensors"))
                with torch.no_grad():
                    for n, p in self.trained_named:
                        p.copy_(current[n].to(p.device))
                self.optimizer.load_state_dict(
                    torch.load(d / "optimizer.pt", weights_only=True))
                self.scheduler.load_state_dict(
                    torch.load(d / "scheduler.pt", weights_only=True))

    def keep_best(self) -> None:
        """The loop's hook when validation loss improves."""
        self.best = self.trained_state()

    def report(self, metrics: dict[str, float], save: bool) -> None:
        """The loop's hook: the step's metrics to Ray Train (and the board), with a
        checkpoint when `save`."""
        import ray.train

        if self.rank == 0:
            board.post(self.job.get("board"), self.job["run_name"], int(metrics["step"]),
                       self.plan.total_steps)
        if not save:
            ray.train.report(metrics)
            return
        self.checkpoint(metrics)

    def checkpoint(self, metrics: dict[str, float]) -> None:
        """`metrics` reported with a checkpoint: the loop state, the best weights, and the
        trained weights, optimizer and schedule (DDP) or every rank's ZeRO-3 shard."""
        import ray.train
        from safetensors.torch import save_file

        rank, zero3 = self.rank, self.zero3
        current = self.trained_state() if rank == 0 and not zero3 else None  # DDP: replicas agree
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            if zero3:  # every rank writes its own shard; Ray Train merges the folders
                self.stepper.model.save_checkpoint(str(d / "deepspeed"))
            if rank == 0:
                (d / "state.json").write_text(json.dumps(self.state.to_dict()))
                if self.best is not None:
                    save_file(self.best, str(d / "best.safetensors"))
                if not zero3:
                    save_file(current, str(d / "adapter.safetensors"))
                    torch.save(self.optimizer.state_dict(), d / "optimizer.pt")
                    torch.save(self.scheduler.state_dict(), d / "scheduler.pt")
            keep = rank == 0 or zero3
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(d))
                             if keep else None)

    def train(self) -> None:
        """The loop, from the resumed state, reported to the adapter's tracked run."""
        job, target, tr, cfg = self.job, self.target, self.tr, self.cfg
        tracked = self.tracked = worker_session(job.get("tracking"), {
            "condition": job["condition"], "seed": job["seed"], "target": target.name,
            "model": target.model, "world_size": self.world, "grad_accum": self.accum,
            "total_steps": self.plan.total_steps, "train_examples": len(self.train_examples),
            **{f"training.{k}": v for k, v in tr.model_dump().items()},
            **{f"lora.{k}": v for k, v in cfg.lora.model_dump().items()}})
        if tracked is not None:  # resumed: the steps before the checkpoint again, in case the
            for metrics in self.state.history:  # killed worker's last lines never reached
                tracked.log_step(metrics)  # the backend
        settings = LoopSettings(device=self.device, eval_every=tr.eval_every_steps,
                                patience=tr.early_stopping_patience, n_params=self.n_params,
                                report_every=tr.report_every_steps, autocast=tr.autocast,
                                loss_chunk=self.loss_chunk)
        self.state = run_loop(self.stepper, self.train_loader, self.sampler, self.val_loader,
                              self.plan, self.state, settings, report=self.report,
                              on_best=self.keep_best,
                              fault_hook=_fault_hook(self.rank, job["run_name"]),
                              on_step=tracked and tracked.log_step)

    def finish(self) -> None:
        """The best weights (or the last) saved as the adapter, with its training summary,
        on rank 0; the tracked run ended; a ZeRO-3 engine released."""
        state = self.state
        final = self.best if self.best is not None else self.trained_state()
        if self.tracked is not None:
            self.tracked.log_final({"best_val_loss": state.best_val,
                                    "best_step": state.best_step, "steps": state.step,
                                    "stopped_early": float(state.stopped_early)})
            self.tracked.end()
        if self.rank == 0:
            self._save(final)
        if self.zero3:  # the run's next adapter builds an engine of its own: release this one's
            self.stepper.model.destroy()  # optimizer partitions and ZeRO-3 hooks now, not at exit

    def _save(self, final: dict[str, torch.Tensor]) -> None:
        job, state, tr = self.job, self.state, self.tr
        summary = {"target": self.target.name, "condition": job["condition"],
                   "seed": job["seed"], "job_hash": job.get("job_hash"),
                   "steps": state.step, "total_steps": self.plan.total_steps,
                   "best_step": state.best_step, "best_val_loss": state.best_val,
                   "stopped_early": state.stopped_early,
                   "train_examples": len(self.train_examples),
                   "world_size": self.world, "grad_accum": self.accum,
                   "strategy": self.target.strategy, "resumed_from_step": self.resumed_from,
                   "padding_free": self.padding_free, "loss_chunk_tokens": self.loss_chunk,
                   "group_by_length": tr.group_by_length, "batching_notes": self.notes,
                   "history": state.history}
        # a run in a bucket: saved here (checked, complete), then uploaded for the driver
        out = scratch_dir("adapter-") / "adapter" if job.get("output_uri") else job["output"]
        if self.full:
            save_full_model(self.model, self.tokenizer, out, state_dict=final, extra=summary)
        else:
            save_adapter(self.model, out, state_dict=final, extra=summary)
        if job.get("output_uri"):
            upload_tree(out, job["output_uri"])
            shutil.rmtree(Path(out).parent, ignore_errors=True)
