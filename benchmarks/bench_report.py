"""`layersim.report` on SmolLM2-135M at the issue's size (256 sequences of 128 tokens): time, peak memory, and
what reading every layer costs against plain forwards over *every* batch. Writes benchmarks/report.md.

    PYTHONPATH=lib .venv/bin/python benchmarks/bench_report.py [--n 256] [--threads 2]

1. The report itself (`layersim.report.report`, the same call as ``python -m layersim.report smollm2-135m
   --n N --seq-len 128``), its own seconds (read, similarity) and the peak resident memory of the process
   while it runs (VmHWM, reset before it through /proc/self/clear_refs).
2. On the same batches, in one process, in pairs with the order alternating per batch: a plain forward of
   the model (``adapter.run_model``: embeddings, blocks, final norm, the vocabulary head on every token) and
   the block loop that records every layer (``adapter.hidden_states``), no head. Their ratio over all
   batches is what reading the layers costs beyond the model; the heads the readout applies at every layer
   (report's read time minus the blocks) are the part it cannot avoid, shown beside it.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from layersim import models
from layersim.models import eval_mode
from layersim.report import report
from layersim.report.inputs import resolve_data

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_lm_loss import _status  # noqa: E402  (the process's memory fields, as that benchmark reads them)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="/tmp/layersim-bench-report")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    adapter = models.load_model("smollm2-135m")
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident memory
    start = time.perf_counter()
    page = report(adapter, n=args.n, seq_len=128, out=args.out, progress=True)
    wall = time.perf_counter() - start
    peak = _status("VmHWM")
    numbers = page.numbers
    data = resolve_data(adapter, None, n=args.n, seq_len=128)
    plain, blocks = [], []
    with torch.no_grad(), eval_mode(adapter.model):
        for i, (x, _) in enumerate(data.batches):
            order = ("plain", "blocks") if i % 2 == 0 else ("blocks", "plain")
            for what in order:
                t = time.perf_counter()
                adapter.run_model(x) if what == "plain" else adapter.hidden_states(x)
                (plain if what == "plain" else blocks).append(time.perf_counter() - t)
    ratios = [b / p for b, p in zip(blocks, plain)]
    read = numbers["seconds"]["read"]
    heads = read - sum(blocks)
    lines = ["# The report on SmolLM2-135M: time, memory, and the cost of reading every layer\n",
             f"Command: `PYTHONPATH=lib .venv/bin/python benchmarks/bench_report.py --n {args.n} --threads "
             f"{args.threads}` ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, torch {torch.__version__}, "
             f"{args.threads} threads, CPU).\n",
             f"- Report: {numbers['samples']:,} tokens compared ({data.num_inputs} sequences of 128 tokens, "
             f"{len(data.batches)} batches), {wall:.0f} s in all: read {read:.0f} s, similarity "
             f"{numbers['seconds']['similarity']:.0f} s.",
             f"- Peak resident memory while the report ran: {peak / 2 ** 30:.2f} GiB (the process held "
             f"{before / 2 ** 30:.2f} GiB with the model loaded, before it).",
             f"- Every batch, plain forward against the block loop that records all {adapter.num_layers} layers "
             f"(paired, order alternating): plain {sum(plain):.1f} s, blocks {sum(blocks):.1f} s in all; ratio of "
             f"the sums {sum(blocks) / sum(plain):.3f}, median paired ratio {statistics.median(ratios):.3f} "
             f"(min {min(ratios):.3f}, max {max(ratios):.3f}).",
             f"- The heads: the report's read time minus the blocks, {heads:.0f} s ({heads / sum(plain):.1f} plain "
             f"forwards' worth): the {adapter.num_classes:,}-token head applied at {adapter.num_layers} layers with "
             "its log-softmax, top-k and probabilities.",
             f"- Last-layer next-token accuracy {numbers['accuracy'][-1]:.4f}, perplexity "
             f"{numbers['perplexity'][-1]:.2f}.", ""]
    (HERE / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
