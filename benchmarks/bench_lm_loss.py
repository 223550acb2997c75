"""Aligned training step of a causal LM at GPT-2-small's shape: peak memory and time against a standard step.

GPT-2 small (12 layers, width 768, vocabulary 50,257), random weights, a batch of 4 x 256 tokens, CPU,
float32. One training step = forward, `layersim.losses` objective, backward, AdamW step. The variants:

- standard:        the model's own prediction only (lm_head on layer 12);
- aligned (fused): lm_head(ln_f(h_l)) on all 12 layers through `layersim.fused_ce` (the library's path: one
                   call for all layers, gradients formed in the forward pass);
- aligned (naive): the same loss with the full (tokens, V) logits of every layer kept for backward;
- aligned (sampled per token): layer 12 plus one layer per token drawn from the aligned weights
                   (``layer_sampling="token"``, an unbiased estimator of the aligned loss), fused;
- aligned (sampled per token, fraction p): the same, but only a random p of the tokens (p = 0.5, 0.25) read
                   their sampled layer, weighted by 1 / p (``sampled_fraction``; still unbiased).

Every variant runs in a fresh child process (this script with --child), so that its peak resident
memory (VmHWM, reset through /proc/self/clear_refs after the model, optimizer state and batch exist) is
its own; peak memory is reported whole and above that baseline (weights, gradients, AdamW state). Time is the median of `--repeats` steps after a
warm-up step, and the time ratio against the standard step is compared with the ratio predicted by counting
the multiply-adds: the model's FLOPs are counted by FlopCounterMode on one standard step (with the fused
head's in-place weight-gradient products, which FlopCounterMode leaves out), and each extra readout of N
rows costs 3 x 2 N d V (logits, gradient of the rows, gradient of the weight) in both the fused and the
naive loss: 11 extra readouts for aligned, 1 for the sampled loss, p with a fraction p. The load average before each variant is
recorded; --rounds R interleaves R runs of every variant and reports the median of each round's ratios to
its own standard step, in wall-clock and in CPU time (the machine is shared: compare ratios).

    PYTHONPATH=lib .venv/bin/python benchmarks/bench_lm_loss.py [--repeats 3] [--threads 2] [--rounds 1]
        [--variants standard,aligned-sampled-token,...]
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
VARIANTS = {"standard": ("standard", True), "aligned-fused": ("aligned", True), "aligned-naive": ("aligned", False),
            "aligned-sampled-token": ("aligned", True, "token"),
            "aligned-sampled-token-0.5": ("aligned", True, "token", 0.5),
            "aligned-sampled-token-0.25": ("aligned", True, "token", 0.25)}  # objective, fused, sampling, fraction


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _setup(objective: str, fused: bool, sampling: str = "none", fraction: float = 1.0):
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
    objective_fn = losses.make_objective(objective, adapter, layer_sampling=sampling, sampled_fraction=fraction)
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


def child(variant: str, repeats: int, threads: int, flops: bool) -> dict:
    torch.set_num_threads(threads)
    step = _setup(*VARIANTS[variant])
    step()  # warm-up: optimizer state and gradient buffers now exist
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    base = _status("VmRSS")
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    peak = _status("VmHWM")
    result = {"variant": variant, "peak_mb": peak / 2 ** 20, "peak_above_baseline_mb": (peak - base) / 2 ** 20,
              "baseline_mb": base / 2 ** 20, "step_s": statistics.median(times), "cpu_s": statistics.median(cpu)}
    if variant == "standard" and flops:
        from torch.utils.flop_counter import FlopCounterMode

        def addmm_(bias, a, b, *args, out_shape=None, **kwargs):  # in-place addmm_: not counted by default
            return 2 * a[0] * a[1] * b[1]

        with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: addmm_}) as counter:
            step()
        result["step_flops"] = counter.get_total_flops()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="run every variant this many times, interleaved; "
                        "ratios are the median over rounds of each round's ratio to its own standard step")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated variants to run (standard is always run: the ratios' reference)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--flops", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.threads, args.flops)))
        return 0
    chosen = ["standard"] + [v for v in args.variants.split(",") if v and v != "standard"]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    rounds = []
    for r in range(args.rounds):
        results = {}
        for variant in chosen:
            load = Path("/proc/loadavg").read_text().split()[:3]
            done = subprocess.run([sys.executable, __file__, "--child", variant, "--repeats", str(args.repeats),
                                   "--threads", str(args.threads)] + (["--flops"] if r == 0 else []),
                                  capture_output=True, text=True)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            results[variant] = {**json.loads(done.stdout.strip().splitlines()[-1]), "load": load}
            print(f"round {r + 1}", variant, results[variant], flush=True)
        rounds.append(results)
    results = {v: {**rounds[0][v], **{k: statistics.median(rr[v][k] / rr["standard"][k] for rr in rounds)
                                      for k in ("step_s", "cpu_s")}} for v in chosen}  # ratios
    absolute = {v: {k: statistics.median(rr[v][k] for rr in rounds) for k in ("step_s", "cpu_s")} for v in chosen}
    tokens, d, V, L = BATCH * SEQ, SHAPE["n_embd"], SHAPE["vocab_size"], SHAPE["n_layer"]
    readout = 3 * 2 * tokens * d * V  # one readout with its gradients (fused or naive alike)
    standard_flops = results["standard"]["step_flops"]
    predicted = {"aligned": (standard_flops + (L - 1) * readout) / standard_flops,
                 **{f"sampled, p={p}": (standard_flops + p * readout) / standard_flops for p in (1, 0.5, 0.25)}}
    std = results["standard"]
    print(f"\n{args.rounds} round(s) x {args.repeats} step(s) per variant; times: median over rounds; ratios: median "
          "over rounds of the ratio to the same round's standard step")
    print("\n| variant | peak memory (MB) | ratio | above baseline (MB) | ratio | step time (s) | ratio | CPU time (s) "
          "| ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['peak_mb']:.0f} | {r['peak_mb'] / std['peak_mb']:.2f} "
              f"| {r['peak_above_baseline_mb']:.0f} | {r['peak_above_baseline_mb'] / std['peak_above_baseline_mb']:.2f} "
              f"| {absolute[name]['step_s']:.2f} | {r['step_s']:.2f} | {absolute[name]['cpu_s']:.2f} | {r['cpu_s']:.2f} |")
    print(f"\nstandard step: {standard_flops / 1e9:.0f} GFLOP counted; time ratios predicted from FLOPs: "
          + ", ".join(f"{k} {v:.2f}" for k, v in predicted.items()))
    if "aligned-fused" in chosen and "aligned-naive" in chosen:
        fused_naive = statistics.median(rr["aligned-fused"]["step_s"] / rr["aligned-naive"]["step_s"] for rr in rounds)
        print(f"fused / naive aligned step time: {fused_naive:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
