"""Cost of extracting every layer against a plain forward pass of the same model and batch.

Both are measured in the same process, in interleaved pairs, and reported as the median of the paired
ratios (absolute times depend on the machine; the ratio is the claim: at most 1.15).

- "per batch": one batch through ``model(x)`` against the per-batch work of `layersim.extract.extract`
  (every block's output, pooling, and for the ViT the shared head on every layer with its summaries).
- "end to end": `extract(...)` over the whole data set without a cache (tokenisation, the temporary
  on-disk store and assembling the result included) against a loop of plain forward passes over the
  same batches (tokenisation included for text); for the ViT also into a new disk-cache entry (weights
  hashed, results streamed to disk, assembled, checksummed and read back).

Run:  PYTHONPATH=lib .venv/bin/python benchmarks/bench_extract.py [--repeats 11] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from layersim.extract import extract
from layersim.models import VisionTransformer, ViTConfig, adapt, load_model

WORDS = ("the a film story actor scene plot music long short funny sad bright dark slow quick never always "
         "good bad great dull moving clever tired fresh rotten ending beginning director screen audience "
         "laughs tears heart mind camera colour light night day city village love war friend enemy").split()


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(n)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name: str, plain, full, repeats: int) -> dict:
    """Paired timing of `plain` and `full` (after one warm-up each).

    Each repeat times both back to back, alternating which goes first, and gives one ratio full/plain;
    the median of these paired ratios is the main number: on a shared machine the load drifts, and a
    pair sees nearly the same load. Minimum times and their ratio are printed beside it.
    """
    plain(), full()
    t_plain, t_full = [], []
    for i in range(repeats):
        if i % 2:
            t_full.append(timed(full))
            t_plain.append(timed(plain))
        else:
            t_plain.append(timed(plain))
            t_full.append(timed(full))
    paired = statistics.median(f / p for f, p in zip(t_full, t_plain))
    p, f = min(t_plain), min(t_full)
    row = {"name": name, "plain_min_s": p, "extract_min_s": f, "ratio": paired, "ratio_of_minima": f / p}
    print(f"| {name} | {p * 1000:.1f} | {f * 1000:.1f} | {paired:.3f} | {f / p:.3f} |", flush=True)
    return row


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), python {sys.version.split()[0]}")
    print("| case | plain forward, min (ms) | all-layer extraction, min (ms) | median paired ratio | ratio of minima |")
    print("|---|---|---|---|---|")
    rows = []

    # our ViT: 6 blocks, width 128, 7x7 patches on 28x28 images (the default profile's model)
    vit = VisionTransformer(ViTConfig(image_size=28, in_chans=1, patch_size=7, depth=6, width=128, heads=4,
                                      num_classes=10)).eval()
    adapter = adapt(vit)
    x = torch.randn(256, 1, 28, 28)
    with torch.no_grad():
        rows.append(compare("ViT, batch 256, features + readout of all 6 layers", lambda: vit(x),
                            lambda: extract(adapter, x, pooling="cls", readout=True, keep_logits=True,
                                            batch_size=len(x), progress=False), args.repeats))
    images = torch.randn(2048, 1, 28, 28)

    def vit_plain_loop():
        with torch.no_grad():
            for start in range(0, len(images), 256):
                vit(images[start:start + 256])

    rows.append(compare("ViT, 2048 images, end to end (extract, no cache)", vit_plain_loop,
                        lambda: extract(adapter, images, pooling="cls", batch_size=256, progress=False),
                        args.repeats))

    def vit_extract_to_new_cache():
        with tempfile.TemporaryDirectory() as folder:  # a fresh cache: computed, written, checked, read
            extract(adapter, images, pooling="cls", batch_size=256, progress=False, cache_dir=folder,
                    data_key="bench")

    rows.append(compare("ViT, 2048 images, end to end into a new disk cache entry", vit_plain_loop,
                        vit_extract_to_new_cache, args.repeats))

    # MiniLM-L6 (offline pretrained), mean pooling; it has no classification head, so features only
    encoder = load_model("minilm-l6")
    batch = texts(64)
    enc = encoder.encode(batch)
    with torch.no_grad():
        rows.append(compare("MiniLM-L6, batch 64, features of all 6 layers", lambda: encoder.model(**enc),
                            lambda: extract(encoder, [enc], pooling="mean", readout=False, progress=False),
                            args.repeats))
    corpus = texts(512, seed=1)

    def minilm_plain_loop():
        with torch.no_grad():
            for start in range(0, len(corpus), 64):
                encoder.model(**encoder.encode(corpus[start:start + 64]))

    rows.append(compare("MiniLM-L6, 512 texts, end to end (extract, no cache)", minilm_plain_loop,
                        lambda: extract(encoder, corpus, pooling="mean", batch_size=64, readout=False,
                                        progress=False), args.repeats))
    worst = max(r["ratio"] for r in rows)
    print(f"\nworst ratio {worst:.3f} (target <= 1.15): {'PASS' if worst <= 1.15 else 'FAIL'}")
    return rows


if __name__ == "__main__":
    main()
