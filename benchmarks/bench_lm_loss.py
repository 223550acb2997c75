"""Aligned training step of a causal LM at GPT-2-small's shape: peak memory and time against a standard step.

GPT-2 small (12 layers, width 768, vocabulary 50,257), random weights, a batch of 4 x 256 tokens, CPU,
float32. One training step = forward, `layersim.losses` objective, backward, AdamW step. Three variants:

- standard:        the model's own prediction only (lm_head on layer 12);
- aligned (fused): lm_head(ln_f(h_l)) on all 12 layers through `layersim.fused_ce` (the library's path);
- aligned (naive): the same loss with the full (tokens, V) logits of every layer kept for backward.

Every variant runs in a fresh child process (this script with --child), so that its peak resident
memory (VmHWM, reset through /proc/self/clear_refs after the model, optimizer state and batch exist) is
its own; peak memory is reported whole and above that baseline (weights, gradients, AdamW state). Time is the median of `--repeats` steps after a
warm-up step, and the time ratio aligned / standard is compared with the ratio predicted by counting
the multiply-adds: the model's FLOPs are counted by FlopCounterMode on one standard step, and the
aligned step adds 11 more readouts (forward 2NdV, fused backward 6NdV: it recomputes the logits).

    PYTHONPATH=lib .venv/bin/python benchmarks/bench_lm_loss.py [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

SHAPE = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
BATCH, SEQ = 4, 256


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _setup(objective: str, fused: bool):
    import transformers

    from layersim import losses
    from layersim.models import adapt

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**SHAPE, resid_pdrop=0.0, embd_pdrop=0.0,
                                                                   attn_pdrop=0.0))
    adapter = adapt(model)
    if not fused:
        losses.FUSE_ABOVE_ELEMENTS = 2 ** 62  # never fuse: the naive loss
    objective_fn = losses.make_objective(objective, adapter)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, SHAPE["vocab_size"], (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def step():
        optimizer.zero_grad(set_to_none=False)
        out = objective_fn(adapter, adapter.hidden_states(batch), None)
        out.loss.backward()
        optimizer.step()
        return float(out.loss)

    return step


def child(variant: str, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    objective, fused = {"standard": ("standard", True), "aligned-fused": ("aligned", True),
                        "aligned-naive": ("aligned", False)}[variant]
    step = _setup(objective, fused)
    step()  # warm-up: optimizer state and gradient buffers now exist
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    base = _status("VmRSS")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = _status("VmHWM")
    result = {"variant": variant, "peak_mb": peak / 2 ** 20, "peak_above_baseline_mb": (peak - base) / 2 ** 20,
              "baseline_mb": base / 2 ** 20, "step_s": statistics.median(times)}
    if variant == "standard":
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            step()
        result["step_flops"] = counter.get_total_flops()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.threads)))
        return 0
    results = {}
    for variant in ("standard", "aligned-fused", "aligned-naive"):
        done = subprocess.run([sys.executable, __file__, "--child", variant, "--repeats", str(args.repeats),
                               "--threads", str(args.threads)], capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        print(variant, results[variant], flush=True)
    tokens, d, V, L = BATCH * SEQ, SHAPE["n_embd"], SHAPE["vocab_size"], SHAPE["n_layer"]
    readout = 2 * tokens * d * V  # one forward readout; the fused backward costs 3 of these
    standard_flops = results["standard"]["step_flops"]
    predicted = (standard_flops + (L - 1) * 4 * readout) / standard_flops
    std = results["standard"]
    print("\n| variant | peak memory (MB) | ratio | above baseline (MB) | ratio | step time (s) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['peak_mb']:.0f} | {r['peak_mb'] / std['peak_mb']:.2f} "
              f"| {r['peak_above_baseline_mb']:.0f} | {r['peak_above_baseline_mb'] / std['peak_above_baseline_mb']:.2f} "
              f"| {r['step_s']:.2f} | {r['step_s'] / std['step_s']:.2f} |")
    print(f"\nstandard step: {standard_flops / 1e9:.0f} GFLOP counted; predicted aligned/standard time ratio "
          f"from FLOPs: {predicted:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
