"""The one training loop: any objective, any adapter, one CPU to many GPUs (torchrun + DDP), resumable.

Read top to bottom: the step (model + objective as one module), the optimizer and the learning-rate
schedule, then `train` (the folder, the processes) and `_run`, the loop itself: build, resume, step,
evaluate at the end of every epoch, save. Where it runs is `dist`, what it measures `evaluate`, what it
writes `runs`.

The loop talks to the model only through the adapter interface (``hidden_states``, ``pool``,
``head_inputs``, ``targets``, ``reader``, ``ExitHeads``) and to the data only through the
`Task` (``train_batch`` / ``eval_batch``); it never asks which family a model is.

Determinism: the data order of epoch e is a permutation seeded by (seed, e); the augmentation of a step
is drawn for the whole global batch from (seed, step); dropout is reseeded at every step from
(seed, step, rank); the layers a sampled aligned loss reads (``layer_sampling``) are drawn from (seed, step,
micro-batch) by the objective's own generator (`layersim.losses.AlignedLoss`). So a run resumed from any checkpoint replays exactly the steps it would have taken,
and the samples see the same augmentation whatever the number of processes. The RNG states of torch /
numpy / python are saved and restored as well, for anything else that draws from them.

Distributed: under ``torchrun`` (WORLD_SIZE > 1) the process group is initialised (`dist`) and the step
runs through DistributedDataParallel. The global batch (``batch_size``) is cut into equal contiguous
shares, one per rank, so that the averaged gradient equals the single-process gradient of the same batch.
Evaluation is sharded (rank r takes test samples r, r+W, ...), and the per-layer counts are all-reduced.
Only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn as nn

from ..losses import make_objective
from ..storage import atomic_save, file_lock
from . import checkpoint as ckpt
from .config import ConfigError, TrainConfig, differences, identity, identity_hash, layer_weights, resolve
from .dist import Dist, setup_distributed, to_device, use_bf16
from .evaluation import evaluate
from .runs import (LOCK_FILE, MODEL_FILE, TOKENIZER_DIR, TrainResult, append_log, discard_unstarted, keep_log,
                   load_run, make_folder, model_payload, prepare_folder, read_log, run_folder, save_tokenizer)
from .tasks import build_task


def _progress(iterable, **kwargs):
    try:
        from ..progress import progress
    except ImportError:  # pragma: no cover - the progress module ships with the package
        from tqdm.auto import tqdm

        kwargs.pop("disable", None)
        return tqdm(iterable, **kwargs)
    return progress(iterable, **kwargs)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ---- the training step as one module (so that DDP sees the whole forward) ------------------------------------
class TrainStep(nn.Module):
    """model + objective (incl. exit heads): forward(batch, labels) -> (loss, per-layer losses)."""

    def __init__(self, adapter, objective: nn.Module):
        super().__init__()
        self.model = adapter.model
        self.objective = objective
        self._adapter = (adapter,)  # not a submodule

    def forward(self, batch, labels):
        adapter = self._adapter[0]
        out = self.objective(adapter, adapter.hidden_states(batch), labels)
        return out.loss, out.per_layer


# ---- optimizer and learning-rate schedule ----------------------------------------------------------------------
def make_optimizer(module: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _, p in module.named_parameters():  # shared parameters once
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def schedule_factor(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """The learning-rate multiplier after `step` optimizer steps: linear warm-up over the first
    round(warmup x total) steps, then cosine to 0, linear to 0, or constant (as transformers' schedulers)."""
    warm = int(round(cfg.warmup * total_steps))
    if step < warm:
        return step / max(1, warm)
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total_steps - warm)
    if cfg.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule_factor(step, cfg, total_steps))


# ---- training --------------------------------------------------------------------------------------------------
def train(config: "TrainConfig | dict | str | Path" = "vit-fashion-mnist", out: "str | Path | None" = None, *,
          overwrite: bool = False, **overrides) -> TrainResult:
    """Train (or resume, or return the finished) run of `config` in folder `out`.

    config: a recipe name, a YAML file, a dict or a TrainConfig; overrides: config keys (e.g. epochs=1).
    `out` receives config.yaml, log.jsonl (one record per evaluation, per-layer accuracies under
    "layer_acc"), checkpoint.pt (and checkpoint.prev.pt) and model.pt at the end. Started again after a
    kill, the same call resumes from the last checkpoint and ends with the same weights. A folder holding
    another run is refused (RunConflictError) unless overwrite=True.
    """
    cfg = resolve(config, overrides)
    if out is None:
        raise ValueError("train() needs an output folder: out=... (or use train_cached for the shared cache)")
    out = run_folder(out)
    dist = setup_distributed(cfg)
    try:
        lock = file_lock(out / LOCK_FILE) if dist.is_main else contextlib.nullcontext()
        created = make_folder(out) if dist.is_main else False
        prepared = False
        with lock:
            try:
                if dist.is_main:
                    prepare_folder(out, cfg, overwrite)
                    prepared = True
                dist.barrier()
                if (out / MODEL_FILE).exists():
                    return load_run(out)
                return _run(cfg, out, dist)
            except BaseException:
                if prepared:  # refused late (or stopped) before a checkpoint: leave nothing that blocks a rerun
                    discard_unstarted(out, created)
                raise
    finally:
        if dist.owns_group:
            tdist.destroy_process_group()


def _run(cfg: TrainConfig, out: Path, dist: Dist) -> TrainResult:
    from ..models import ExitHeads

    # ---- data, model, objective
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2 ** 32)
    task = build_task(cfg)
    adapter = task.adapter
    adapter.model.to(dist.device)
    heads = None
    if cfg.objective == "multi_exit":
        torch.manual_seed(_seed(cfg.seed, 3))
        heads = ExitHeads.for_adapter(adapter).to(dist.device)
    objective = make_objective(cfg.objective, adapter, weights=layer_weights(cfg), heads=heads,
                               label_smoothing=cfg.label_smoothing, layer_sampling=cfg.layer_sampling,
                               sampled_fraction=cfg.sampled_fraction,
                               seed=cfg.seed).to(dist.device)
    step_module = TrainStep(adapter, objective)
    step_module.train()

    # ---- batches: the global batch cut into one share per rank, each share into grad_accum micro-batches
    B, W = cfg.batch_size, dist.world
    if B % W:
        raise ConfigError(f"batch_size {B} (the global batch) is not divisible by the {W} processes; make it a "
                          f"multiple of {W}")
    n_train = len(task.train)
    steps_per_epoch = n_train // B
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size {B} is larger than the training set ({n_train} samples); lower it or "
                          "raise n_train")
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    share, A = B // W, cfg.grad_accum
    if share % A:
        raise ConfigError(f"each of the {W} processes takes {share} samples of the global batch {B}, which "
                          f"grad_accum={A} cannot cut into equal micro-batches; make batch_size a multiple of "
                          f"{W * A}")
    micro = share // A
    rows = [slice(dist.rank * share + i * micro, dist.rank * share + (i + 1) * micro) for i in range(A)]

    # ---- optimizer, schedule, precision
    optimizer = make_optimizer(step_module, cfg)
    scheduler = make_scheduler(optimizer, cfg, total)
    bf16 = use_bf16(cfg, dist.device)

    def autocast():
        return torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=bf16)

    # ---- resume
    h = identity_hash(cfg)
    describe = lambda old: differences(old, identity(cfg))  # noqa: E731
    state = ckpt.load(out, h, describe_difference=describe, writer=True) if dist.is_main else None
    dist.barrier()
    if not dist.is_main:
        state = ckpt.load(out, h, describe_difference=describe, writer=False)
    start, log_lines, train_time = 0, 0, 0.0
    loss_sum, loss_count = 0.0, 0
    if state is not None:
        step_module.load_state_dict(state["modules"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        start, log_lines, train_time = state["global_step"], state["log_lines"], state["train_time_s"]
        loss_sum, loss_count = state["loss_sum"], state["loss_count"]
    if dist.is_main:
        keep_log(out, log_lines)  # the records the checkpoint knows of; later ones are written again
    runner = step_module
    if W > 1:
        runner = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)

    def save_checkpoint(global_step: int) -> None:
        if dist.is_main:
            ckpt.save({"identity": identity(cfg), "identity_hash": h, "global_step": global_step,
                       "epoch": global_step // steps_per_epoch, "step_in_epoch": global_step % steps_per_epoch,
                       "modules": step_module.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "rng": ckpt.rng_state(), "log_lines": log_lines,
                       "train_time_s": train_time, "loss_sum": loss_sum, "loss_count": loss_count}, out)

    # ---- the loop
    order, order_epoch = None, -1
    record = (read_log(out)[-1] if log_lines else {}) if dist.is_main else {}
    tick = time.perf_counter()
    desc = f"train {cfg.name} ({cfg.objective})"
    for g in _progress(range(start, total), desc=desc, total=total - start, unit="step",
                       disable=not (dist.is_main and cfg.progress)):
        epoch, k = divmod(g, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = np.random.default_rng([cfg.seed, 0, epoch]).permutation(n_train), epoch
        if k == 0:
            loss_sum, loss_count = 0.0, 0
        torch.manual_seed(_seed(cfg.seed, 2, g, dist.rank))  # dropout etc.: the same on a resumed run
        batch = order[k * B:(k + 1) * B]
        value = 0.0
        for i, part in enumerate(rows):  # gradient accumulation: each micro-batch's mean loss weighted 1/A
            inputs, labels = task.train_batch(batch, part, (cfg.seed, 1, g))
            objective.set_draw(cfg.seed, g, dist.rank * A + i)
            sync = contextlib.nullcontext() if (W == 1 or i == A - 1) else runner.no_sync()
            with sync:
                with autocast():
                    loss, _ = runner(to_device(inputs, dist.device), labels.to(dist.device))
                (loss / A).backward()  # A = 1: dividing by 1 is exact
            value += loss.item() / A
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(step_module.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if not np.isfinite(value):
            raise FloatingPointError(f"the loss is {value} at step {g + 1} of {cfg.name}: training diverged; "
                                     "lower lr or raise warmup")
        loss_sum, loss_count = loss_sum + value, loss_count + 1
        done = g + 1
        if done % steps_per_epoch == 0 or done == total:  # end of an epoch or of training: evaluate, log, save
            train_time += time.perf_counter() - tick
            eval_start = time.perf_counter()
            result = evaluate(adapter, task, heads=heads, dist=dist, batch_size=cfg.eval_batch_size,
                              autocast=autocast)
            mean_loss = dist.sum(torch.tensor([loss_sum, float(loss_count)], dtype=torch.float64))
            whole = done % steps_per_epoch == 0
            record = {"epoch": done // steps_per_epoch if whole else round(done / steps_per_epoch, 4),
                      "step": done, "objective": cfg.objective,
                      "train_loss": mean_loss[0].item() / mean_loss[1].item(), "lr": scheduler.get_last_lr()[0],
                      **result, "world_size": W, "train_time_s": round(train_time, 3),
                      "eval_time_s": round(time.perf_counter() - eval_start, 3)}
            if result["exit_acc"] is None:
                record.pop("exit_acc")
            if dist.is_main:
                append_log(out, record)
                accs = " ".join(f"{a:.3f}" for a in record["layer_acc"])
                print(f"{cfg.name} ({cfg.objective}) epoch {record['epoch']:g}/{total / steps_per_epoch:g}: train loss "
                      f"{record['train_loss']:.4f}, test accuracy by layer {accs}", flush=True)
            log_lines += 1
            save_checkpoint(done)
            tick = time.perf_counter()
        elif cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
            train_time += time.perf_counter() - tick
            tick = time.perf_counter()
            save_checkpoint(done)

    # ---- the end: model.pt (and the run's own tokenizer) beside the log
    dist.barrier()
    adapter.model.eval()
    if dist.is_main:
        if not record:
            record = read_log(out)[-1]
        if task.tokenizer is not None:  # the run's own tokenizer goes with the weights
            save_tokenizer(task.tokenizer, out / TOKENIZER_DIR)
        atomic_save(model_payload(adapter, heads, cfg, task.info, record), out / MODEL_FILE)
    dist.barrier()
    log = read_log(out)
    last = log[-1] if log else record
    return TrainResult(adapter, heads, cfg, last.get("layer_acc"), last.get("exit_acc"), log, out, task.info,
                       trained=start < total)
