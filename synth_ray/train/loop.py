"""The per-worker training loop, with no Ray in it: it runs under Ray Train's TorchTrainer
(`train/driver.py`), in a plain process (the benchmark), or on a GPU machine without Ray.

Gradient accumulation, clipping, a warm-up + decay schedule, validation every
`eval_every_steps` optimizer steps with early stopping (patience, keep the best), and
resumable state. `report(metrics, save)` is the caller's hook: Ray Train's report, a print.

An optimizer step is one accumulation group: `accum` micro-batches on every worker (fewer
for the last group of an epoch). Its loss is the mean over every target token of the group
on every worker, as one big batch would have it: each micro-batch's mean loss is weighted
by its share of the group's targets (counted across workers before the group's first
backward). Dividing by `accum` instead would weight a short micro-batch's tokens more and
overweight the partial group at an epoch's end; DeepSpeed is told where each group ends
(`set_gradient_accumulation_boundary`) rather than counting micro-batches itself, so its
optimizer and schedule step exactly when this loop counts a step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from synth_ray.train.data import batch_tokens
from synth_ray.train.loss import micro_batch_loss

# Dense bf16 peak FLOP/s, for MFU. LoRA costs about 4N FLOPs per token: 2N forward,
# 2N for the activation gradients, none for the frozen weights' gradients.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


@dataclass
class TrainState:
    adapter: str = ""  # the adapter's run name: a Ray Train run may train several in turn
    step: int = 0  # optimizer steps done
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches of `epoch` already consumed
    best_val: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(**d)


@dataclass(frozen=True)
class Plan:
    micro_per_epoch: int
    accum: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def plan_steps(n_train: int, per_device: int, world: int, accum: int, epochs: float,
               warmup_ratio: float, max_steps: int | None = None) -> Plan:
    micro = math.ceil(n_train / (per_device * world))
    per_epoch = max(1, math.ceil(micro / accum))
    total = max_steps or max(1, math.ceil(per_epoch * epochs))
    return Plan(micro, accum, per_epoch, total, int(round(total * warmup_ratio)))


def peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def mfu(tokens_per_s: float, n_params: int, peak: float | None) -> float | None:
    return None if not peak else tokens_per_s * 4 * n_params / peak


class TorchStep:
    """Plain PyTorch optimizer step (the model may be DDP-wrapped)."""

    def __init__(self, model, optimizer, scheduler, max_grad_norm: float):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.max_grad_norm = max_grad_norm

    def sync_context(self, boundary: bool):
        # DDP all-reduces on every backward unless told not to: only on the last micro-batch.
        if not boundary and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        """`loss` is already this micro-batch's share of the group's loss."""
        loss.backward()
        if boundary:
            params = [p for p in self.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]


class DeepSpeedStep:
    """A DeepSpeed engine: it accumulates, clips and steps by its own config."""

    def __init__(self, engine):
        self.model = engine

    def sync_context(self, boundary: bool):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, boundary: bool) -> None:
        # the group ends where the loop says (a short last group of an epoch included), and
        # the loss is already weighted (no division by gradient_accumulation_steps)
        self.model.set_gradient_accumulation_boundary(boundary)
        self.model.backward(loss, scale_wrt_gas=False)
        self.model.step()

    def lr(self) -> float:
        return self.model.get_lr()[0]


def build_optimizer(model, learning_rate: float, weight_decay: float):
    """AdamW over the trainable parameters; no weight decay on vectors (biases, norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)


def build_scheduler(optimizer, scheduler: str, plan: Plan):
    from transformers import get_scheduler

    return get_scheduler(scheduler, optimizer, num_warmup_steps=plan.warmup_steps,
                         num_training_steps=plan.total_steps)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def sums_across_workers(values: list[float], device) -> list[float]:
    """Each value summed over every worker, in one all-reduce."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if _distributed():
        torch.distributed.all_reduce(t)
    return [float(v) for v in t]


def mean_across_workers(total: float, count: float, device) -> float:
    total, count = sums_across_workers([total, count], device)
    return total / count if count else math.nan


def world_size() -> int:
    return torch.distributed.get_world_size() if _distributed() else 1


def n_targets(batch: dict[str, torch.Tensor]) -> int:
    """Target tokens of a micro-batch: position t predicts labels[t + 1]; -100 is none."""
    return int((batch["labels"][..., 1:] != -100).sum())


def accumulation_groups(loader, start: int, accum: int):
    """(index of its last micro-batch, micro-batches) per optimizer step of one epoch, from
    micro-batch `start` on (a resumed epoch starts at a group's boundary). The last group
    of an epoch may be short."""
    group: list = []
    for i, batch in enumerate(loader):
        if i < start:
            continue  # consumed before the checkpoint we resumed from
        group.append(batch)
        if (i + 1) % accum == 0 or i + 1 == len(loader):
            yield i, group
            group = []


def mixed_precision(device, autocast: str) -> Callable[[], Any]:
    """A context factory: torch.autocast in `autocast`'s type, or nothing for "none"."""
    if autocast == "none":
        return contextlib.nullcontext
    dtype = getattr(torch, autocast)
    return lambda: torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@torch.no_grad()
def evaluate(model, loader, device, loss_chunk: int | None = None) -> float:
    """Token-weighted mean validation loss over every worker's shard."""
    model.eval()
    total, count = 0.0, 0.0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        n = float((batch["labels"][:, 1:] != -100).sum())
        total += float(micro_batch_loss(model, batch, loss_chunk)) * n
        count += n
    model.train()
    return mean_across_workers(total, count, device)


@dataclass(frozen=True)
class LoopSettings:
    """What `run_loop` is told, apart from the live objects it drives."""

    device: Any  # where batches go: "cpu", or the worker's torch.device
    eval_every: int  # validate (and checkpoint) every this many optimizer steps
    patience: int  # validations without improvement before an early stop
    n_params: int  # the model's parameter count, for MFU
    report_every: int = 1  # report (without a checkpoint) every this many steps
    autocast: str = "none"  # torch.autocast's dtype, or "none"
    loss_chunk: int | None = None  # tokens at a time for the loss, or the model's own (None)


def run_loop(
    stepper, train_loader, sampler, val_loader, plan: Plan, state: TrainState,
    settings: LoopSettings, *, report: Callable[[dict[str, float], bool], None],
    on_best: Callable[[], None], fault_hook: Callable[[int], None] | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> TrainState:
    """Train until `plan.total_steps` or early stop. `report(metrics, save_checkpoint)` is
    called every `settings.report_every` optimizer steps and at every validation (with a
    checkpoint); `on_best()` when validation loss improves. Every step's metrics go into
    `state.history`. Batches are padded or padding-free (`data.collate*`); `loss_chunk`
    tokens at a time for the loss (`loss.py`), or the model's own loss (None)."""
    device, loss_chunk = settings.device, settings.loss_chunk
    model = stepper.model
    model.train()
    peak = peak_flops()
    amp = mixed_precision(device, settings.autocast)
    world = world_size()
    while state.step < plan.total_steps and not state.stopped_early:
        sampler.set_epoch(state.epoch)  # same shuffle on resume
        t0 = time.perf_counter()
        for last, group in accumulation_groups(train_loader, state.micro_in_epoch, plan.accum):
            group = [{k: v.to(device) for k, v in b.items()} for b in group]
            counts = [n_targets(b) for b in group]
            (group_targets,) = sums_across_workers([float(sum(counts))], device)
            loss_sum, tokens = 0.0, 0
            for j, (batch, n) in enumerate(zip(group, counts)):
                boundary = j + 1 == len(group)
                with stepper.sync_context(boundary):
                    with amp():
                        loss = micro_batch_loss(model, batch, loss_chunk)
                    # this micro-batch's share of the group's mean; x world: DDP and ZeRO
                    # average gradients over workers, the group's mean sums them
                    share = n * world / group_targets if group_targets else 0.0
                    stepper.backward(loss * share, boundary)
                loss_sum += float(loss.detach()) * n
                tokens += batch_tokens(batch)
            state.micro_in_epoch = last + 1
            state.step += 1
            # A step's time runs from the end of the previous one, so the previous step's
            # validation, report and checkpoint count against throughput too.
            now = time.perf_counter()
            dt, t0 = now - t0, now
            loss_sum, step_tokens = sums_across_workers([loss_sum, float(tokens)], device)
            step_loss = loss_sum / group_targets if group_targets else 0.0
            metrics = {"step": state.step, "epoch": state.epoch, "loss": step_loss,
                       "lr": stepper.lr(), "tokens": step_tokens, "step_time_s": dt,
                       "tokens_per_s": step_tokens / dt if dt else 0.0}
            tps = metrics["tokens_per_s"]
            if (m := mfu(tps, settings.n_params, peak)) is not None:
                metrics["mfu"] = m
            save = state.step % settings.eval_every == 0 or state.step >= plan.total_steps
            if save:
                with amp():
                    val = (evaluate(model, val_loader, device, loss_chunk) if val_loader
                           else step_loss)
                metrics["val_loss"] = val
                if val < state.best_val:
                    state.best_val, state.best_step, state.bad_evals = val, state.step, 0
                    on_best()
                else:
                    state.bad_evals += 1
                    state.stopped_early = state.bad_evals >= settings.patience
            state.history.append(metrics)
            if on_step:  # every step's metrics (experiment tracking)
                on_step(metrics)
            if save or state.step % settings.report_every == 0:
                report(metrics, save)
            if fault_hook:
                fault_hook(state.step)
            if state.step >= plan.total_steps or state.stopped_early:
                break
        else:
            state.epoch += 1
            state.micro_in_epoch = 0
    return state

