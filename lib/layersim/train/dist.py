"""Where a training run computes: the processes of a torchrun job, the device of each, bf16 or not.

Under ``torchrun`` (WORLD_SIZE > 1) `setup_distributed` initialises the process group (nccl on GPU, gloo on
CPU); on one process it only picks the device. `Dist` is what the loop and the evaluation need of it: the
rank, the world size, the device, a barrier and an all-reduce (sum). Only rank 0 (``dist.is_main``) writes
files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from .config import ConfigError, TrainConfig


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


def device_for(name: str, local_rank: int) -> torch.device:
    """The device of config key `device` ("auto", "cpu", "cuda", "cuda:N") for the process of `local_rank`."""
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
    device = device_for(cfg.device, local)
    owns = False
    if world > 1 and not tdist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    if world > 1:
        rank, world = tdist.get_rank(), tdist.get_world_size()
    return Dist(rank, world, local, device, owns)


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
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


def to_device(batch, device):
    """A batch of model inputs moved onto `device`: a tensor, or a dict of them; texts stay as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch  # texts: the adapter tokenises onto its device
