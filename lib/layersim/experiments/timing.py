"""Measured time: exiting the whole batch at each layer (`time_fixed_exits`), and real per-sample early exit
against the plain forward (`measure_early_exit`, `plain_forward`)."""
from __future__ import annotations

import statistics
import time

import pandas as pd
import torch
from ..validate import whole_number

__all__ = ["time_fixed_exits", "plain_forward", "measure_early_exit"]


# ---- measured time of exiting at each layer ----------------------------------------------------------------
def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fixed_exits(adapter, batch, *, reader=None, repeats: int = 5, warmup: int = 1) -> pd.DataFrame:
    """Measured wall-clock time of exiting the whole batch at each layer l = 1..L (a truncated forward:
    blocks after l never run, `layersim.early_exit.exit_at_layer`) against the model's plain forward.

    Each repeat times the plain forward and every exit back to back (in an order that alternates between
    repeats), so load drifting on a shared machine affects them alike; the speed-up of layer l is the
    median over repeats of time(plain forward) / time(exit at l).
    -> DataFrame with columns layer, time_s (median), full_time_s (median), speedup.
    """
    from ..early_exit import exit_at_layer
    from ..models import adapt, eval_mode

    adapter = adapt(adapter)
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        whole_number(value, name, low=low, what=f"an integer >= {low}")
    L = adapter.num_layers
    device = adapter.device

    def full():
        with torch.no_grad(), eval_mode(adapter.model):
            return adapter.logits(batch)

    calls = [full] + [(lambda l=l: exit_at_layer(adapter, batch, l, reader=reader)) for l in range(1, L + 1)]

    def timed(fn) -> float:
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        for fn in calls:
            fn()
    times = [[] for _ in calls]
    for r in range(repeats):
        order = range(len(calls)) if r % 2 == 0 else range(len(calls) - 1, -1, -1)
        for i in order:
            times[i].append(timed(calls[i]))
    full_times = times[0]
    rows = [{"layer": l, "time_s": statistics.median(times[l]), "full_time_s": statistics.median(full_times),
             "speedup": statistics.median([f / t for f, t in zip(full_times, times[l])])} for l in range(1, L + 1)]
    return pd.DataFrame(rows)


def plain_forward(adapter, batch) -> torch.Tensor:
    """(B, C) logits of the model's own forward pass (all L blocks, its head), under no_grad in eval mode,
    returned on the CPU (so that a timed call includes waiting for a GPU to finish)."""
    from ..models import adapt, eval_mode

    adapter = adapt(adapter)
    with torch.no_grad(), eval_mode(adapter.model):
        return adapter.logits(batch).cpu()


def measure_early_exit(adapter, batch, policy, *, labels=None, reader=None, repeats: int = 5,
                       warmup: int = 1) -> dict:
    """Real per-sample early exit (`layersim.early_exit.early_exit`: exited samples leave the batch) of
    `batch` under `policy`, and its measured speed-up over the plain forward of the whole model
    (`layersim.early_exit.paired_speedup`: paired, alternating timings, median of the ratios).

    -> dict with result (the `ExitResult`: exit_layer (B,), preds (B,), accuracy with labels), speedup,
    full_s and exit_s (median seconds of the plain forward and of the early exit).
    """
    from ..early_exit import early_exit, paired_speedup

    result = early_exit(adapter, batch, policy, reader=reader, labels=labels)
    timing = paired_speedup(lambda: plain_forward(adapter, batch),
                            lambda: early_exit(adapter, batch, policy, reader=reader),
                            repeats=repeats, warmup=warmup)
    return {"result": result, "speedup": timing["speedup"], "full_s": timing["reference_s"],
            "exit_s": timing["candidate_s"]}
