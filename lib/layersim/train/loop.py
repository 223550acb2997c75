"""The one training loop: any objective, any adapter, one CPU to many GPUs (torchrun + DDP), resumable.

The loop talks to the model only through the adapter interface (``hidden_states``, ``pool``,
``head_inputs``, ``targets``, ``reader``, ``ExitHeads``) and to the data only through the
`Task` (``train_batch`` / ``eval_batch``); it never asks which family a model is.

Determinism: the data order of epoch e is a permutation seeded by (seed, e); the augmentation of a step
is drawn for the whole global batch from (seed, step); dropout is reseeded at every step from
(seed, step, rank). So a run resumed from any checkpoint replays exactly the steps it would have taken,
and the samples see the same augmentation whatever the number of processes. The RNG states of torch /
numpy / python are saved and restored as well, for anything else that draws from them.

Distributed: under ``torchrun`` (WORLD_SIZE > 1) the process group is initialised here (nccl on GPU,
gloo on CPU) and the step runs through DistributedDataParallel. The global batch (``batch_size``) is cut
into equal contiguous shares, one per rank, so that the averaged gradient equals the single-process
gradient of the same batch. Evaluation is sharded (rank r takes test samples r, r+W, ...), and the
per-layer correct counts are all-reduced. Only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn as nn
import yaml

from ..losses import make_objective
from ..storage import atomic_save, atomic_write_text, clean_leftovers, default_cache_dir, file_lock, load_or_build
from . import checkpoint as ckpt
from .config import (ConfigError, TrainConfig, differences, identity, identity_hash, layer_weights, resolve,
                     to_yaml)
from .tasks import Task, build_model, build_task, pipeline_from_info

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
MODEL_FILE = "model.pt"
LOCK_FILE = ".lock"
RUN_FILES = (CONFIG_FILE, LOG_FILE, ckpt.CHECKPOINT, ckpt.PREVIOUS, ckpt.CHECKPOINT + ".corrupt", MODEL_FILE)
MODEL_FORMAT = "layersim.train.model"
TOKENIZER_DIR = "tokenizer"  # a language model's own tokenizer (tokenizer: bpe or a name), beside model.pt


class RunConflictError(ValueError):
    """The output folder holds something this run must not overwrite (another config, foreign files)."""


def _progress(iterable, **kwargs):
    try:
        from ..progress import progress
    except ImportError:  # pragma: no cover - the progress module ships with the package
        from tqdm.auto import tqdm

        kwargs.pop("disable", None)
        return tqdm(iterable, **kwargs)
    return progress(iterable, **kwargs)


# ---- results -----------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """A trained model and what its training recorded.

    adapter: the model's adapter (``result.model`` is the model); heads: the ExitHeads of a multi-exit
    model (None otherwise); layer_acc: (L) test accuracy of the shared last-layer classifier at layers
    1..L after the last epoch; exit_acc: each layer's own exit head (multi-exit only); log: the records
    of log.jsonl; dir: the run folder; info: the data the model was trained on (classes, input
    normalisation); trained: whether this call trained (False when it read a finished run back).
    """

    adapter: Any
    heads: Optional[nn.Module]
    config: TrainConfig
    layer_acc: list
    exit_acc: Optional[list]
    log: list
    dir: Path
    info: dict = field(default_factory=dict)
    trained: bool = False  # this call ran training steps (False: read back from a finished run)

    @property
    def model(self) -> nn.Module:
        return self.adapter.model

    def prepare(self, inputs):
        """Images (n, C, H, W) in [0, 1] -> the model's input (resized, normalised as in training);
        texts are returned unchanged."""
        pipeline = pipeline_from_info(self.info)
        return pipeline(inputs) if pipeline is not None else inputs


# ---- distributed set-up ------------------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) over the ranks; `tensor` itself on one process."""
        if self.world > 1:
            moved = tensor.to(self.device)
            tdist.all_reduce(moved, op=tdist.ReduceOp.SUM)
            return moved.to(tensor.device)
        return tensor


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} but no CUDA device is available; use device=cpu or auto")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


def setup_distributed(cfg: TrainConfig) -> Dist:
    """Rank, world size and device from torchrun's environment; initialises the process group if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg.device, local)
    owns = False
    if world > 1 and not tdist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    if world > 1:
        rank, world = tdist.get_rank(), tdist.get_world_size()
    return Dist(rank, world, local, device, owns)


def _use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: `auto` on CUDA devices that support bf16; `bf16` insists (error where unsupported)."""
    if cfg.amp == "off":
        return False
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = cfg.amp == "bf16" and bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                                                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
        if cfg.amp == "auto":
            return False  # bf16 on CPU rarely pays for training a small model; ask for it with amp=bf16
    if cfg.amp == "bf16" and not supported:
        raise ConfigError(f"amp=bf16 but this {device.type} has no bf16 support; use amp=auto or off")
    return supported


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ---- the training step as one module (so that DDP sees the whole forward) ------------------------------------
class _Step(nn.Module):
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


def _optimizer(module: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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


def _scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule_factor(step, cfg, total_steps))


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch  # texts: the adapter tokenises onto its device


# ---- evaluation ------------------------------------------------------------------------------------------------
def _readout_counts(preds: torch.Tensor, nll: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(3L) float64: per layer the correct count, the summed cross-entropy, and the saturation histogram
    (samples whose saturation layer is l), from (L, n) predictions and (L, n) cross-entropies."""
    from ..metrics import saturation_layer

    L = preds.shape[0]
    correct = (preds == targets[None]).sum(1)
    histogram = torch.bincount(saturation_layer(preds) - 1, minlength=L)
    return torch.cat([correct.double(), nll.double().sum(1), histogram.double()]).cpu()


@torch.no_grad()
def evaluate(adapter, task: Task, *, heads: Optional[nn.Module] = None, dist: Optional[Dist] = None,
             batch_size: int = 256, autocast=contextlib.nullcontext) -> dict:
    """Every layer read by the shared last-layer classifier (and by each exit head) on the test split.

    Returns {"layer_acc": (L) accuracy, "layer_nll": (L) mean cross-entropy (for a language model per token:
    exp of it is the layer's perplexity, also under "layer_ppl"), "saturation_hist": (L) samples whose
    prediction saturates at layer l (PAPER.md), "early_saturation": share saturating before layer L,
    "test_loss": cross-entropy of the model's own prediction, "n_test": samples (tokens for a language
    model)}; a multi-exit model adds the same for its exit heads ("exit_acc", "exit_nll",
    "exit_saturation_hist", "exit_early_saturation"). The logits are formed in chunks of samples
    (`layersim.models.read_chunks`), so a vocabulary never needs (L, tokens, V) at once. Under torchrun each rank
    takes samples r, r+W, ... and the counts are all-reduced.
    """
    from ..metrics.readout import readout_stats
    from ..models import as_reader, eval_mode, read_chunks

    dist = dist or Dist(device=adapter.device)
    L = adapter.num_layers
    mine = np.arange(dist.rank, len(task.test), dist.world)
    shared = torch.zeros(3 * L, dtype=torch.float64)
    exits = torch.zeros(3 * L, dtype=torch.float64)
    n = torch.zeros(1, dtype=torch.float64)
    layers = range(1, L + 1)
    with eval_mode(adapter.model), autocast():
        readers = [(shared, adapter.reader)] + ([(exits, as_reader(adapter, heads))] if heads is not None else [])
        for start in range(0, len(mine), batch_size):
            inputs, labels = task.eval_batch(mine[start:start + batch_size])
            hidden = adapter.hidden_states(_to_device(inputs, dist.device))
            vectors = adapter.head_inputs(hidden)
            y = adapter.targets(hidden, labels)
            for counts, reader in readers:
                for rows, logits in read_chunks(reader, vectors, layers):
                    stats = readout_stats(logits, targets=y[rows])
                    counts += _readout_counts(stats["preds"], -stats["label_logprob"], y[rows])
            n += y.numel()
    totals = dist.sum(torch.cat([shared, exits, n]))
    n = totals[-1].item()

    def summary(counts: torch.Tensor, prefix: str) -> dict:
        hist = counts[2 * L:3 * L]
        out = {f"{prefix}_acc": (counts[:L] / n).tolist(), f"{prefix}_nll": (counts[L:2 * L] / n).tolist(),
               f"{prefix}_saturation_hist": [int(v) for v in hist.tolist()],
               f"{prefix}_early_saturation": (hist[:L - 1].sum() / n).item()}
        if adapter.vocabulary_readout:
            out[f"{prefix}_ppl"] = torch.exp(counts[L:2 * L] / n).tolist()
        return out

    result = summary(totals[:3 * L], "layer")
    result["saturation_hist"] = result.pop("layer_saturation_hist")
    result["early_saturation"] = result.pop("layer_early_saturation")
    if heads is not None:
        result.update(summary(totals[3 * L:6 * L], "exit"))
    else:
        result["exit_acc"] = None
    result.update(test_loss=result["layer_nll"][-1], n_test=int(n))
    return result


# ---- the run folder ------------------------------------------------------------------------------------------
def _read_log(folder: Path) -> list:
    path = folder / LOG_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: only complete lines count
    return records


def _saved_config(folder: Path) -> TrainConfig:
    path = folder / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return resolve(data if isinstance(data, dict) else {"?": data})
    except (OSError, yaml.YAMLError, ConfigError, TypeError) as e:
        raise RunConflictError(f"{path} cannot be read as a training config ({e}); nothing was changed. Train "
                               "into another --out folder, or pass --overwrite to discard that run") from e


def _prepare_folder(out: Path, cfg: TrainConfig, overwrite: bool) -> None:
    """Rank 0: refuse to touch a folder holding another run (unless `overwrite`), write config.yaml."""
    out.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out)
    entries = [p for p in out.iterdir() if p.name != LOCK_FILE]
    if entries:
        if (out / CONFIG_FILE).exists():
            try:
                old = _saved_config(out)
                same = identity(old) == identity(cfg)
                why = f"differs in {differences(identity(old), identity(cfg))}"
            except RunConflictError as e:
                same, why = False, str(e)
        else:
            same, why = False, "no config.yaml: it is not a layersim training run"
        if not same and not overwrite:
            raise RunConflictError(f"{out} already holds something else ({why}); nothing was changed. Train into "
                                   "another --out folder, or pass --overwrite (overwrite=True) to discard what "
                                   "the folder holds of a training run")
        if overwrite:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            if (out / TOKENIZER_DIR).exists():
                from ..storage import remove_folder

                remove_folder(out / TOKENIZER_DIR)
    atomic_write_text(out / CONFIG_FILE, to_yaml(cfg))


def _model_payload(adapter, heads, cfg: TrainConfig, info: dict, record: dict) -> dict:
    from ..models import VisionTransformer

    model_params = {id(p) for p in adapter.model.parameters()}
    separate_heads = heads is not None and not {id(p) for p in heads.parameters()} <= model_params
    payload = {"format": MODEL_FORMAT, "train_config": asdict(cfg), "identity_hash": identity_hash(cfg),
               "info": info, "state_dict": adapter.model.state_dict(),
               "exit_heads": heads.state_dict() if separate_heads else None,
               "layer_acc": record.get("layer_acc"), "exit_acc": record.get("exit_acc")}
    if isinstance(adapter.model, VisionTransformer):  # also loadable by VisionTransformer.load / load_model
        payload["config"] = asdict(adapter.model.config)
    return payload


def load_run(out) -> TrainResult:
    """The finished run in folder `out` (config.yaml + model.pt) as a TrainResult (model in eval mode)."""
    from ..models import ExitHeads

    out = Path(out)
    path = out / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the run in {out} has not finished (run the same "
                                "training command again to resume it)")
    cfg = _saved_config(out)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is unreadable ({type(e).__name__}); delete it and run the training command "
                         "again (it resumes from the last checkpoint)") from e
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model written by layersim.train")
    if payload["identity_hash"] != identity_hash(cfg):
        raise ValueError(f"{path} does not belong to the config in {out / CONFIG_FILE}")
    tokenizer = None
    if (out / TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(out / TOKENIZER_DIR))
    adapter = build_model(cfg, payload["info"], tokenizer)
    adapter.model.load_state_dict(payload["state_dict"])
    adapter.model.eval()
    heads = None
    if cfg.objective == "multi_exit":
        heads = ExitHeads.for_adapter(adapter)
        if payload["exit_heads"] is not None:
            heads.load_state_dict(payload["exit_heads"])
    return TrainResult(adapter, heads, cfg, payload["layer_acc"], payload["exit_acc"], _read_log(out), out,
                       payload["info"])


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
    out = Path(out)
    dist = setup_distributed(cfg)
    try:
        lock = file_lock(out / LOCK_FILE) if dist.is_main else contextlib.nullcontext()
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
        with lock:
            if dist.is_main:
                _prepare_folder(out, cfg, overwrite)
            dist.barrier()
            if (out / MODEL_FILE).exists():
                return load_run(out)
            return _run(cfg, out, dist)
    finally:
        if dist.owns_group:
            tdist.destroy_process_group()


def _run(cfg: TrainConfig, out: Path, dist: Dist) -> TrainResult:
    from ..models import ExitHeads

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
                               label_smoothing=cfg.label_smoothing).to(dist.device)
    step_module = _Step(adapter, objective)
    step_module.train()

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
    optimizer = _optimizer(step_module, cfg)
    scheduler = _scheduler(optimizer, cfg, total)
    use_bf16 = _use_bf16(cfg, dist.device)

    def autocast():
        return torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=use_bf16)

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
        kept = _read_log(out)[:log_lines]
        atomic_write_text(out / LOG_FILE, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
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

    order, order_epoch = None, -1
    record = (_read_log(out)[-1] if log_lines else {}) if dist.is_main else {}
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
            sync = contextlib.nullcontext() if (W == 1 or i == A - 1) else runner.no_sync()
            with sync:
                with autocast():
                    loss, _ = runner(_to_device(inputs, dist.device), labels.to(dist.device))
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
            record = {"epoch": done // steps_per_epoch if whole else round(done / steps_per_epoch, 4), "step": done, "objective": cfg.objective,
                      "train_loss": mean_loss[0].item() / mean_loss[1].item(), "lr": scheduler.get_last_lr()[0],
                      **result, "world_size": W, "train_time_s": round(train_time, 3),
                      "eval_time_s": round(time.perf_counter() - eval_start, 3)}
            if result["exit_acc"] is None:
                record.pop("exit_acc")
            if dist.is_main:
                _append_log(out, record)
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
    dist.barrier()
    adapter.model.eval()
    if dist.is_main:
        if not record:
            record = _read_log(out)[-1]
        if task.tokenizer is not None:  # the run's own tokenizer goes with the weights
            save_tokenizer(task.tokenizer, out / TOKENIZER_DIR)
        atomic_save(_model_payload(adapter, heads, cfg, task.info, record), out / MODEL_FILE)
    dist.barrier()
    log = _read_log(out)
    last = log[-1] if log else record
    return TrainResult(adapter, heads, cfg, last.get("layer_acc"), last.get("exit_acc"), log, out, task.info,
                       trained=start < total)


def save_tokenizer(tokenizer, folder: Path) -> None:
    """Write `tokenizer` (save_pretrained) into `folder`, replacing it atomically."""
    from ..storage import atomic_folder

    with atomic_folder(folder, replace=True) as tmp:
        tokenizer.save_pretrained(str(tmp))


def _append_log(out: Path, record: dict) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---- the notebook entry point ---------------------------------------------------------------------------------
def run_folder_name(cfg: TrainConfig) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.name).strip("-") or "run"
    return f"{slug}-{cfg.objective}-{identity_hash(cfg)[:16]}"


def train_cached(config: "TrainConfig | dict | str | Path" = "vit-fashion-mnist", *,
                 cache_dir: "str | Path | None" = None, **overrides) -> TrainResult:
    """Train `config` (recipe name, YAML file, dict or TrainConfig, plus `overrides`), or return the cached
    result of an identical earlier run.

    The run lives in ``<cache_dir or default_cache_dir()/runs>/<name>-<objective>-<hash of the config>``.
    Two processes asking for the same run at once: one trains, the other waits for it and reuses the result.
    A run that was killed is resumed from its last checkpoint; an unreadable model.pt is retrained from there.
    """
    cfg = resolve(config, overrides)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "runs"
    out = root / run_folder_name(cfg)
    # an unreadable model.pt is removed and the run trained again from its last checkpoint
    return load_or_build(out / MODEL_FILE, lambda _: load_run(out), lambda _: train(cfg, out),
                         lock=root / f"{out.name}.lock", damaged=(ValueError, RuntimeError, KeyError),
                         what="the model file of cached run")
