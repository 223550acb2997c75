"""Speed and memory of layersim.metrics, measured against references in the same run.

Usage (from the repository root):

    PYTHONPATH=lib .venv/bin/python benchmarks/bench_metrics.py            # everything
    PYTHONPATH=lib .venv/bin/python benchmarks/bench_metrics.py --only linear debiased

Every measurement runs in a fresh child process (this script with --child), so the peak memory
of one does not hide another's. Peak memory is the rise of the process's peak resident set size
(VmHWM, reset through /proc/self/clear_refs after the input is built) over the resident size with
the input in memory. Times are medians over repeats; speed is reported as ratios against a
reference timed in the same process, interleaved with the measured call.

Benchmarks:
  linear     all-pairs linear CKA, L=13, n=10,000, d=384, float32, against the single product
             Z^T Z (Z = n x (L d) stack of the centred layers): target ratio <= 1.5.
  debiased   all-pairs debiased CKA against pytorch-cka 1.1.3 `cka.cka_from_features` at n=4,096
             and n=10,000 (target: >= 4x faster at n=4,096, without its O(L n^2) memory). The
             reference is optional: without the package, or with too little free memory for it,
             it is skipped with a message.
  streaming  StreamingCKA over batches of 1,000 generated on the fly, for two n: peak memory
             must not grow with n.
  cos        COS (all pairs) at the size of `linear`, for scale.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from layersim import metrics  # noqa: E402

NUM_LAYERS, WIDTH = 13, 384


# ----------------------------------------------------------------------------------------------
# Child side: one measurement per process
# ----------------------------------------------------------------------------------------------
def make_features(n: int, seed: int = 0, num_layers: int = NUM_LAYERS, width: int = WIDTH) -> torch.Tensor:
    """(L, n, d) float32 features of a residual-stream shape: each layer adds noise to the last."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.empty(num_layers, n, width)
    feats[0].normal_(generator=gen)
    for layer in range(1, num_layers):
        feats[layer] = feats[layer - 1] + 0.5 * torch.randn(n, width, generator=gen)
    return feats


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_once(function):
    """(seconds, peak memory rise in MB, result) of one call."""
    baseline = resident_mb()
    reset_peak()
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    return seconds, max(0.0, peak_mb() - baseline), result


def timed(function, repeats: int):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def child_linear(args) -> dict:
    feats = make_features(args.n)
    n = feats.shape[1]
    stacked = (feats - feats.mean(dim=1, keepdim=True)).permute(1, 0, 2).reshape(n, -1).contiguous()

    def product():
        return stacked.T @ stacked

    def ours():
        return metrics.cka(feats)

    product(), ours()  # warm-up
    product_times, cka_times = [], []
    for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
        product_times += timed(product, 1)
        cka_times += timed(ours, 1)
    float32 = ours()
    float64 = metrics.cka(feats.double())
    return {
        "n": n,
        "product_s": product_times,
        "cka_s": cka_times,
        "ratio_of_medians": statistics.median(cka_times) / statistics.median(product_times),
        "ratio_of_minima": min(cka_times) / min(product_times),
        "median_paired_ratio": statistics.median(c / p for c, p in zip(cka_times, product_times)),
        "max_abs_diff_float32_vs_float64": (float32 - float64).abs().max().item(),
    }


def child_debiased(args) -> dict:
    """Peak memory of one call each, then timings of layersim and pytorch-cka interleaved."""
    feats = make_features(args.n)

    def ours():
        return metrics.cka(feats, debiased=True)

    # The first call of each (untimed) measures peak memory and doubles as the warm-up.
    out = {"n": args.n, "ours_s": [], "theirs_s": []}
    _, out["ours_peak_mb"], result = measure_once(ours)
    out["ours_vs_float64"] = (result - metrics.cka(feats.double(), debiased=True)).abs().max().item()
    if args.implementation == "layersim":
        out["ours_s"] = timed(ours, args.repeats)
        return out
    from cka import cka_from_features

    def theirs():
        return cka_from_features(feats, feats)

    _, out["theirs_peak_mb"], reference = measure_once(theirs)
    # pytorch-cka clamps to [0, 1]; compare where its value lies inside that range.
    inside = (reference > 0) & (reference < 1)
    out["max_abs_diff"] = (result - reference.double())[inside].abs().max().item()
    del reference
    for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
        out["ours_s"] += timed(ours, 1)
        out["theirs_s"] += timed(theirs, 1)
    return out


def child_streaming(args) -> dict:
    batch = 1000
    gen_seed = 0

    def run():
        streaming = metrics.StreamingCKA(debiased=args.debiased)
        for index, start in enumerate(range(0, args.n, batch)):
            size = min(batch, args.n - start)
            streaming.update(make_features(size, seed=gen_seed + index))
        return streaming.compute()

    make_features(10)  # import-time allocations before the baseline
    seconds, peak, result = measure_once(run)
    return {"n": args.n, "debiased": args.debiased, "seconds": seconds, "peak_mb": peak, "batch": batch}


def child_cos(args) -> dict:
    feats = make_features(args.n)
    metrics.cos_similarity(feats)
    times = timed(lambda: metrics.cos_similarity(feats), args.repeats)
    return {"n": args.n, "median_s": statistics.median(times)}


CHILDREN = {"linear": child_linear, "debiased": child_debiased, "streaming": child_streaming, "cos": child_cos}


# ----------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------
def run_child(kind: str, **options) -> dict:
    command = [sys.executable, __file__, "--child", kind]
    for key, value in options.items():
        if isinstance(value, bool):
            if value:
                command.append(f"--{key}")
        else:
            command += [f"--{key}", str(value)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def pytorch_cka_version():
    try:
        from importlib.metadata import version

        return version("pytorch-cka")
    except Exception:
        return None


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {available_mb() / 1024:.1f} GiB available; "
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def bench_linear(lines, repeats):
    result = run_child("linear", n=10_000, repeats=repeats)
    ratio = max(result["ratio_of_medians"], result["median_paired_ratio"])
    lines += [
        "## All-pairs linear CKA vs the single product Z^T Z (L=13, n=10,000, d=384, float32)",
        "",
        "| | median s | all runs (s) |",
        "|---|---|---|",
        f"| Z^T Z (float32, Z = 10,000 x 4,992 centred) | {statistics.median(result['product_s']):.3f} | "
        + ", ".join(f"{t:.3f}" for t in result["product_s"]) + " |",
        f"| `metrics.cka(feats)` | {statistics.median(result['cka_s']):.3f} | "
        + ", ".join(f"{t:.3f}" for t in result["cka_s"]) + " |",
        "",
        f"Ratio cka / Z^T Z: **{result['ratio_of_medians']:.2f}** of the medians, "
        f"{result['median_paired_ratio']:.2f} median of the {len(result['cka_s'])} paired runs, "
        f"{result['ratio_of_minima']:.2f} of the fastest runs (target <= 1.5: "
        f"{'met' if ratio <= 1.5 else 'NOT met'}). "
        f"Largest |float32 - float64| over the 13 x 13 matrix: {result['max_abs_diff_float32_vs_float64']:.1e}.",
        "",
    ]


def bench_debiased(lines, repeats):
    version = pytorch_cka_version()
    lines += [
        "## All-pairs debiased CKA vs pytorch-cka `cka_from_features` (L=13, d=384, float32)",
        "",
        "| n | layersim median s | layersim peak MB | pytorch-cka median s | pytorch-cka peak MB "
        "| speed-up (medians; paired) | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for n, rounds in ((4_096, repeats), (10_000, 1)):
        # Two Gram stacks of L n^2 float32 plus a temporary of the same size, and some slack.
        needed_mb = 3.3 * NUM_LAYERS * n * n * 4 / 2**20 + 1024
        if version is None:
            notes.append("pytorch-cka is not installed (optional: `.venv/bin/pip install --no-deps "
                         "pytorch-cka==1.1.3`), so its columns are empty.")
            implementation = "layersim"
        elif available_mb() < needed_mb:
            notes.append(f"pytorch-cka at n={n:,} skipped: it needs about {needed_mb / 1024:.0f} GiB, "
                         f"{available_mb() / 1024:.1f} GiB were available.")
            implementation = "layersim"
        else:
            implementation = "pytorch-cka"
        result = run_child("debiased", n=n, repeats=rounds, implementation=implementation)
        ours = statistics.median(result["ours_s"])
        row = f"| {n:,} | {ours:.3f} | {result['ours_peak_mb']:.0f} |"
        if implementation == "layersim":
            row += " skipped | | | |"
        else:
            theirs = statistics.median(result["theirs_s"])
            paired = statistics.median(t / o for t, o in zip(result["theirs_s"], result["ours_s"]))
            row += (f" {theirs:.3f} | {result['theirs_peak_mb']:.0f} | **{theirs / ours:.1f}x**; "
                    f"{paired:.1f}x | {result['max_abs_diff']:.1e} |")
        lines.append(row)
        notes.append(f"n={n:,}: layersim float32 vs float64 input differ by at most "
                     f"{result['ours_vs_float64']:.1e}; runs (s): layersim "
                     + ", ".join(f"{t:.2f}" for t in result["ours_s"])
                     + ("; pytorch-cka " + ", ".join(f"{t:.2f}" for t in result["theirs_s"])
                        if result["theirs_s"] else "") + " (after one untimed call each, which measured "
                     "the peak memory).")
    lines += [""] + [f"- {note}" for note in notes] + [""]
    if version:
        lines += [f"pytorch-cka {version} computes the unbiased HSIC from L n x n Gram matrices (twice "
                  "when given the same stack for both arguments), so its memory grows as L n^2; in "
                  "float32 its sums over n^2 entries also lose precision (the max abs diff column; "
                  "given float64 input it agrees with layersim to about 1e-14).", ""]


def bench_streaming(lines):
    lines += [
        "## StreamingCKA peak memory (L=13, d=384, batches of 1,000 generated on the fly)",
        "",
        "| estimator | n | seconds | peak MB above baseline |",
        "|---|---|---|---|",
    ]
    for debiased in (False, True):
        for n in (10_000, 40_000):
            result = run_child("streaming", n=n, debiased=debiased)
            name = "debiased" if debiased else "biased"
            lines.append(f"| {name} | {n:,} | {result['seconds']:.2f} | {result['peak_mb']:.0f} |")
    lines += [
        "",
        "The statistics are O((L d)^2) float64 (here the 91 upper-triangle blocks of 384 x 384, about "
        "107 MB) plus one batch: the peak does not depend on n.",
        "",
    ]


def bench_cos(lines, repeats):
    result = run_child("cos", n=10_000, repeats=repeats)
    lines += [
        "## COS (all pairs, centred), L=13, n=10,000, d=384, float32",
        "",
        f"Median {result['median_s']:.3f} s (float64 arithmetic in chunks of samples).",
        "",
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(CHILDREN), help="run only these benchmarks")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement")
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--implementation", default="layersim", help=argparse.SUPPRESS)
    parser.add_argument("--debiased", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return
    chosen = args.only or list(CHILDREN)
    lines = [f"Machine: {machine()}", ""]
    if "linear" in chosen:
        bench_linear(lines, args.repeats)
    if "debiased" in chosen:
        bench_debiased(lines, args.repeats)
    if "streaming" in chosen:
        bench_streaming(lines)
    if "cos" in chosen:
        bench_cos(lines, args.repeats)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
