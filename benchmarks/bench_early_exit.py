"""Measured speed-up of early exit: a forward that stops at layer l against the full forward pass.

Claim (issue 10): exiting at layer l of L gives a wall-clock speed-up of at least 0.8 x L/l, for our ViT
and for MiniLM, at l = L/4, L/2, 3L/4 (L = 6: l = 2, 3, 5, rounding up); and the per-sample confidence
policy, at the threshold where accuracy drops by at most 1 point, is faster than the full model.

Sections (``--only`` picks some):
  fixed     our ViT (default config: 6 blocks, width 128, 7x7 patches; random weights, batch of 256
            Fashion-MNIST-shaped random images) and MiniLM-L6 (offline pretrained, a 2-class head on its
            pooler, 64 review snippets, pre-tokenised): `exit_at_layer(adapter, batch, l)` (a truncated
            forward, `hidden_states(batch, upto=l)`, read out at l) against the model's own forward.
  policy    per-sample confidence exits (`early_exit`: exited samples leave the batch) against the full
            forward, at the threshold chosen on a calibration split as the cheapest with accuracy within
            1 point of the full model's (confidence sweep over 81 quantiles); accuracy checked on a held-out
            split (Fashion-MNIST test images 1-2,000 / 2,001-5,000 of a seeded subset; review test
            snippets 1-1,024 / 1,025-2,048).
            ViT: trained briefly (aligned loss, shared head; Fashion-MNIST, 10,000 images, 2 epochs).
            MiniLM: frozen backbone, exit heads = logistic-regression probes on each layer's [CLS] vector
            (layer 6 the model's own pooler + classifier, fitted the same way) on 2,000 review snippets.
  savings   the parameter-savings table (DeiT-S, DeiT-B, BERT-Base, GPT-2 on the meta device).

Speed is measured in one process as paired ratios: each repeat times the full forward and the early exit
back to back, alternating the order, and the median of the per-pair ratios full / exit is the result.

Run:  PYTHONPATH=lib .venv/bin/python benchmarks/bench_early_exit.py [--repeats 11] [--threads 1] [--only ...]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from layersim.early_exit import (ConfidenceExit, choose_by_accuracy_drop, count_flops, early_exit, exit_at_layer,
                                 paired_speedup, per_layer_logits, savings_table, sweep)
from layersim.models import ExitHeads, VisionTransformer, ViTConfig, adapt, load_model

TARGET = 0.8


def exit_layers(num_layers: int) -> list[int]:
    """L/4, L/2, 3L/4 rounded up (L = 6: 2, 3, 5)."""
    return sorted({math.ceil(num_layers * f) for f in (0.25, 0.5, 0.75)})


def review_snippets(n: int, seed: int = 0, offset: int = 0):
    from layersim import data

    texts = data.load_rotten_tomatoes(seed=seed)
    return (list(texts.train_texts[offset:offset + n]), texts.train_labels[offset:offset + n],
            texts)


# ---- fixed exit layer --------------------------------------------------------------------------------------
def fixed_rows(name: str, adapter, batch, full, repeats: int) -> list[dict]:
    L = adapter.num_layers
    rows = []
    for layer in exit_layers(L):
        with torch.no_grad():
            out = paired_speedup(full, lambda: exit_at_layer(adapter, batch, layer), repeats=repeats)
        target = TARGET * L / layer
        rows.append({"model": name, "layer": layer, "L": L, "full_ms": 1000 * out["reference_s"],
                     "exit_ms": 1000 * out["candidate_s"], "speedup": out["speedup"], "ideal": L / layer,
                     "target": target, "ok": out["speedup"] >= target})
        r = rows[-1]
        print(f"| {name} | {layer} of {L} | {r['full_ms']:.1f} | {r['exit_ms']:.1f} | **{r['speedup']:.2f}x** | "
              f"{r['ideal']:.2f}x | {target:.2f}x | {'met' if r['ok'] else 'MISSED'} |", flush=True)
    return rows


def bench_fixed(repeats: int) -> list[dict]:
    print("\n### Fixed exit layer (whole batch)\n")
    print("| model | exit layer | full forward, median ms | exit at l, median ms | speed-up (median of paired "
          "ratios) | L/l | target 0.8 L/l | |")
    print("|---|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    vit = adapt(VisionTransformer(ViTConfig()).eval())
    images = torch.rand(256, 1, 28, 28)
    rows = fixed_rows("our ViT (L=6, d=128), batch 256", vit, images, lambda: vit.logits(images), repeats)
    minilm = load_model("minilm-l6", num_labels=2)
    texts, _, _ = review_snippets(64)
    enc = minilm.encode(texts)  # tokenised once: both sides time the model only
    with torch.no_grad():  # Hugging Face installs its hidden-state hooks on the first call that asks for them:
        minilm.hidden_states(enc)  # make that call a full one (a truncated first call leaves layers unhooked)
    rows += fixed_rows(f"MiniLM-L6, 64 review snippets ({enc['input_ids'].shape[1]} tokens padded)", minilm, enc,
                       lambda: minilm.model(**enc).logits, repeats)
    return rows


# ---- per-sample confidence policy ------------------------------------------------------------------------
def train_vit_aligned(images, labels, *, epochs: int, batch_size: int = 128, seed: int = 0):
    from layersim.losses import aligned_weights

    torch.manual_seed(seed)
    adapter = adapt(VisionTransformer(ViTConfig()))
    model = adapter.model.train()
    weights = aligned_weights(adapter.num_layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), batch_size):
            idx = order[start:start + batch_size]
            logits = adapter.read(adapter.hidden_states(images[idx]))  # (L, B, C), the shared head on every layer
            loss = sum(w * torch.nn.functional.cross_entropy(lg, labels[idx]) for w, lg in zip(weights, logits))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return adapt(model.eval())


def fit_probe(features: torch.Tensor, labels: torch.Tensor, linear: torch.nn.Linear) -> None:
    """Logistic regression (scikit-learn) on (n, d) features, written into a 2-class nn.Linear: logits
    (-z/2, z/2) with z = w.x + b give the same softmax as the fitted sigmoid."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(max_iter=2000, C=1.0).fit(features.numpy(), labels.numpy())
    w = torch.as_tensor(probe.coef_[0], dtype=linear.weight.dtype)
    b = float(probe.intercept_[0])
    with torch.no_grad():
        linear.weight.copy_(torch.stack([-w / 2, w / 2]))
        linear.bias.copy_(torch.tensor([-b / 2, b / 2], dtype=linear.bias.dtype))


def minilm_with_probes(n_train: int):
    from layersim.extract import extract_features

    adapter = load_model("minilm-l6", num_labels=2)
    texts, labels, data = review_snippets(n_train)
    feats = extract_features(adapter, texts, pooling="cls", progress=False)  # (L, n, d) raw [CLS] vectors
    heads = ExitHeads.for_adapter(adapter)
    labels = torch.as_tensor(labels)
    for layer in range(adapter.num_layers - 1):
        fit_probe(feats[layer], labels, heads.heads[layer])
    with torch.no_grad():
        pooled = adapter.model.bert.pooler(feats[-1][:, None, :])  # the model's own head: classifier(pooler)
    fit_probe(pooled, labels, adapter.model.classifier)
    return adapter, heads, data


def policy_row(name, adapter, calib_batches, calib_labels, test_batches, test_labels, heads, repeats,
               flops_batch) -> dict:
    calib = torch.cat([per_layer_logits(adapter, b, reader=heads) for b in calib_batches], dim=1)
    flops = count_flops(adapter, flops_batch, reader=heads)
    table = sweep(calib, calib_labels, "confidence", flops=flops, num_points=81)
    chosen = choose_by_accuracy_drop(table, 0.01)
    policy = ConfidenceExit(float(chosen["parameter"]))
    results = [early_exit(adapter, b, policy, reader=heads) for b in test_batches]
    exit_layer = torch.cat([r.exit_layer for r in results])
    preds = torch.cat([r.preds for r in results])
    with torch.no_grad():
        full_preds = torch.cat([adapter.logits(b).argmax(-1).cpu() for b in test_batches])
    test_labels = torch.as_tensor(test_labels)
    full_acc = float((full_preds == test_labels).double().mean())
    exit_acc = float((preds == test_labels).double().mean())

    def full():
        with torch.no_grad():
            for b in test_batches:
                adapter.logits(b)

    def exits():
        for b in test_batches:
            early_exit(adapter, b, policy, reader=heads)

    out = paired_speedup(full, exits, repeats=repeats)
    flops_speedup = flops.full_cost() / float(flops.exit_cost(exit_layer, every_layer=True).mean())
    row = {"model": name, "threshold": policy.threshold, "calib_full_acc": table.attrs["full_accuracy"],
           "calib_exit_acc": float(chosen["accuracy"]), "full_acc": full_acc, "exit_acc": exit_acc,
           "depth": float(exit_layer.double().mean()), "L": adapter.num_layers, "flops_speedup": flops_speedup,
           "speedup": out["speedup"], "full_ms": 1000 * out["reference_s"], "exit_ms": 1000 * out["candidate_s"],
           "histogram": torch.bincount(exit_layer - 1, minlength=adapter.num_layers).tolist()}
    print(f"| {name} | {row['threshold']:.4f} | {row['calib_full_acc']:.3f} / {row['calib_exit_acc']:.3f} | "
          f"{full_acc:.3f} / {exit_acc:.3f} ({100 * (exit_acc - full_acc):+.1f} pt) | {row['depth']:.2f} of "
          f"{row['L']} | {row['histogram']} | {flops_speedup:.2f}x | {row['full_ms']:.0f} | {row['exit_ms']:.0f} | "
          f"**{row['speedup']:.2f}x** |", flush=True)
    return row


def bench_policy(repeats: int, train_threads: int, threads: int, checkpoint: str | None) -> list[dict]:
    from pathlib import Path

    from layersim import data

    rows = []
    torch.set_num_threads(train_threads)
    start = time.perf_counter()
    fm = data.load_fashion_mnist(n_train=10_000, n_test=5_000, seed=0)
    x_train, y_train = fm.train.tensors
    x_test, y_test = fm.test.tensors
    if checkpoint and Path(checkpoint).is_file():
        vit = adapt(VisionTransformer.load(checkpoint))
    else:
        vit = train_vit_aligned(x_train, y_train, epochs=2)
        if checkpoint:
            vit.model.save(checkpoint)
    vit_minutes = (time.perf_counter() - start) / 60
    start = time.perf_counter()
    minilm, heads, reviews = minilm_with_probes(2_000)
    probe_minutes = (time.perf_counter() - start) / 60
    torch.set_num_threads(threads)
    print(f"\n(set-up: ViT aligned training {vit_minutes:.1f} min, MiniLM probes {probe_minutes:.1f} min, "
          f"{train_threads} threads)")
    print("\n### Per-sample confidence exits at the threshold with at most 1 point accuracy loss\n")
    print("| model | threshold | calibration accuracy full / exit | held-out accuracy full / exit | mean exit layer "
          "| exits per layer 1..L | FLOPs speed-up | full, median ms | early exit, median ms | measured speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    batch = 256
    calib = [x_test[i:min(i + batch, 2000)] for i in range(0, 2000, batch)]
    test = [x_test[i:min(i + batch, 5000)] for i in range(2000, 5000, batch)]
    rows.append(policy_row("our ViT, aligned, shared head; 2,000 calibration / 3,000 held-out images, batches "
                           "of 256", vit, calib, y_test[:2000], test, y_test[2000:5000], None, repeats, x_test[:64]))
    texts, labels = list(reviews.test_texts[:2048]), torch.as_tensor(reviews.test_labels[:2048])
    enc = [minilm.encode(texts[i:i + 64]) for i in range(0, 2048, 64)]
    rows.append(policy_row("MiniLM-L6, probes as exit heads; 1,024 calibration / 1,024 held-out reviews, batches "
                           "of 64", minilm, enc[:16], labels[:1024], enc[16:], labels[1024:], heads,
                           max(3, repeats // 2), enc[0]))
    return rows


def percent(fraction: float) -> str:
    return f"{100 * fraction:.1f} %" if fraction >= 0.001 else f"{100 * fraction:.3f} %"


def bench_savings() -> None:
    table = savings_table()
    print("\n### Parameter savings of one shared classifier (configs on the meta device)\n")
    print("| model | L | d | C | parameters, one shared head | added by L-1 exit heads | saving (counted) | "
          "saving over nominal size | authors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table.itertuples():
        authors = f"{100 * r.authors:.1f} %" if r.authors == r.authors else "-"
        print(f"| {r.model} | {r.L} | {r.d} | {r.C:,} | {r.shared_params:,} | {r.extra_params:,} | "
              f"{percent(r.saving)} | {percent(r.saving_nominal)} | {authors} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing (1 is steadier)")
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--vit-checkpoint", default=None,
                        help="where to keep the briefly trained ViT (loaded when the file exists; else trained)")
    parser.add_argument("--only", nargs="*", default=["fixed", "policy", "savings"],
                        choices=["fixed", "policy", "savings"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads while timing), python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f}")
    ok = True
    if "fixed" in args.only:
        rows = bench_fixed(args.repeats)
        ok = all(r["ok"] for r in rows)
        print(f"\nfixed exits: worst speed-up / target {min(r['speedup'] / r['target'] for r in rows):.2f} "
              f"({'all met' if ok else 'MISSED'})")
    if "policy" in args.only:
        rows = bench_policy(args.repeats, args.train_threads, args.threads, args.vit_checkpoint)
        for r in rows:
            print(f"{r['model']}: held-out accuracy change {100 * (r['exit_acc'] - r['full_acc']):+.1f} pt, "
                  f"measured speed-up {r['speedup']:.2f}x (FLOPs {r['flops_speedup']:.2f}x)")
    if "savings" in args.only:
        bench_savings()
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
