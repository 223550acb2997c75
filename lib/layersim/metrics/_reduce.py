"""Merging accumulators, in one process (``a.merge(b)``) and across torch.distributed ranks
(``acc.all_reduce_()``).

Every accumulator of :mod:`layersim.metrics` keeps float64 sums over the samples it has seen and
their count, so the accumulator of a union of samples is the sum of the accumulators of the parts.
A subclass says how to describe its settings and shapes (:meth:`Accumulator._signature`, which two
accumulators must share to be merged), how to start empty from such a description, and how to add
another accumulator's sums to its own (:meth:`Accumulator._add`) or sum its own across ranks
(:meth:`Accumulator._sum_across`).
"""
from __future__ import annotations

import copy
from typing import List, Optional

import torch

__all__ = ["Accumulator"]


class Accumulator:
    """Base of the streaming accumulators: ``update`` batches, ``compute`` the result, ``merge``
    another accumulator of other samples, ``all_reduce_`` across processes."""

    n: int = 0

    # -- to be provided by subclasses ------------------------------------------------------------
    def _signature(self) -> dict:
        """Settings and shapes (picklable) that another accumulator needs to be merged with this one;
        shape entries may be None while nothing was seen."""
        raise NotImplementedError

    def _start_empty(self, signature: dict) -> None:
        """Make the (still empty) sums of an accumulator with ``signature``, all zero."""
        raise NotImplementedError

    def _add(self, other: "Accumulator") -> None:
        """Add the sums of ``other`` (same signature, both non-empty) to this accumulator's."""
        raise NotImplementedError

    def _sum_across(self, group, signatures: List[dict]) -> None:
        """Sum this accumulator's sums across the ranks of ``group`` (every rank holds sums now)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------
    def _settings(self, signature: dict) -> dict:
        return {k: v for k, v in signature.items() if k != "n"}

    def _check_compatible(self, mine: dict, theirs: dict, what: str) -> None:
        for key in mine:
            a, b = mine[key], theirs.get(key)
            if key == "n" or a is None or b is None:
                continue
            same = torch.equal(a, b) if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) else a == b
            if not same:
                raise ValueError(
                    f"cannot merge {type(self).__name__} accumulators with different {key}: {a!r} against "
                    f"{b!r} in {what}"
                )

    def merge(self, other: "Accumulator") -> "Accumulator":
        """Add the samples accumulated by ``other`` (another accumulator of the same class and
        settings, over other samples of the same layers) to this one, in place; returns self.

        Afterwards ``compute()`` equals the value of one accumulator given all the samples of both
        (to rounding). ``other`` is not changed.
        """
        if not isinstance(other, type(self)):
            raise TypeError(f"can only merge a {type(self).__name__} into a {type(self).__name__}; got {type(other).__name__}")
        self._check_compatible(self._signature(), other._signature(), "the other accumulator")
        if other.n == 0:
            return self
        if self.n == 0:
            self.__dict__.update(copy.deepcopy(other.__dict__))
            return self
        self._add(other)
        return self

    def all_reduce_(self, group: Optional[object] = None) -> "Accumulator":
        """Sum this accumulator with those of every rank of ``group`` (default: the whole world) of
        torch.distributed, in place; returns self. A collective call: every rank must make it.

        Afterwards every rank's ``compute()`` equals the value of one accumulator given all samples of
        all ranks. Works with any backend (gloo on CPU, nccl on GPU with the sums on the GPU); a rank
        that saw no samples takes part with empty sums. Settings that differ between ranks raise a
        ValueError on every rank.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "all_reduce_() needs torch.distributed: call torch.distributed.init_process_group() "
                "first (or use merge() within one process)"
            )
        signatures: List[Optional[dict]] = [None] * dist.get_world_size(group)
        dist.all_gather_object(signatures, self._signature(), group=group)
        filled = [s for s in signatures if s["n"] > 0]
        reference = filled[0] if filled else signatures[0]
        for rank, signature in enumerate(signatures):
            self._check_compatible(reference, signature, f"rank {rank}")
        if not filled:
            return self
        if self.n == 0:
            self._start_empty(filled[0])
        self._sum_across(group, signatures)
        self.n = sum(s["n"] for s in signatures)
        return self


def all_reduce_sum(tensors: List[torch.Tensor], group) -> None:
    """Sum a list of tensors across ranks in place, as one flat float64 buffer (one collective)."""
    import torch.distributed as dist

    if not tensors:
        return
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    offset = 0
    for t in tensors:
        size = t.numel()
        t.copy_(flat[offset : offset + size].view_as(t))
        offset += size


def empty_device():
    """The device empty sums are made on: the current GPU under nccl, else the CPU."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
