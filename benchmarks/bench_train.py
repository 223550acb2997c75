"""Training-step cost: the aligned objective against the standard one, and our ViT against timm's.

Claims (issue 9): one training step with the aligned objective costs at most 1.05x a step with the
standard objective on the same model and batch (our ViT at the vit-fashion-mnist recipe's size, and
MiniLM-L6 at the minilm-reviews recipe's), and our ViT's training step costs at most 1.0x the step of
timm's ``VisionTransformer`` of the same configuration.

A step is what `layersim.train` does per batch: forward through the adapter (every block's output),
the objective, backward, gradient clipping, AdamW and the scheduler. Both sides of a comparison run in
one process in back-to-back pairs with alternating order; the number reported is the median of the
paired ratios (the machine is shared and its load drifts; a pair sees nearly the same load).

Rows:
- aligned / standard through the loop's own step (`layersim.train.loop.TrainStep`), ViT and MiniLM;
- the loop's standard step against a plain ``CE(model(x), y)`` step of the same model (so that the
  standard side is not inflated by the loop: it reads every block like the aligned one);
- our ViT's plain step against timm's plain step (same config, same weights, same batch).

Run:  PYTHONPATH=lib .venv/bin/python benchmarks/bench_train.py [--repeats 15] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from layersim.early_exit import paired_speedup
from layersim.losses import make_objective
from layersim.models import VisionTransformer, ViTConfig, adapt, load_model, state_dict_to_timm, timm_kwargs
from layersim.train import resolve
from layersim.train.loop import make_optimizer, make_scheduler, TrainStep

from bench_extract import texts  # noqa: E402  (the same generated snippets as the extraction benchmark)


def compare(name: str, reference, candidate, repeats: int, claim: float) -> dict:
    """Median of paired ratios candidate/reference (after two warm-ups each), alternating the order
    (`layersim.early_exit.paired_speedup`; with an odd number of repeats its median speed-up is exactly the
    reciprocal of the median of these ratios)."""
    timing = paired_speedup(reference, candidate, repeats=repeats, warmup=2)
    paired = statistics.median(c / r for c, r in zip(timing["candidate_times"], timing["reference_times"]))
    t_ref, t_new = timing["reference_times"], timing["candidate_times"]
    r, n = min(t_ref), min(t_new)
    verdict = "yes" if paired <= claim else "NO"
    print(f"| {name} | {r * 1000:.1f} | {n * 1000:.1f} | {paired:.3f} | {n / r:.3f} | <= {claim} | {verdict} |",
          flush=True)
    return {"name": name, "reference_min_s": r, "candidate_min_s": n, "ratio": paired, "claim": claim}


def loop_step(adapter, objective_name: str, cfg, batch, labels):
    """One training step as layersim.train runs it (objective via the adapter, clip, AdamW, schedule)."""
    adapter.model.train()
    objective = make_objective(objective_name, adapter)
    step = TrainStep(adapter, objective)
    optimizer = make_optimizer(step, cfg)
    scheduler = make_scheduler(optimizer, cfg, 10 ** 6)

    def run():
        loss, _ = step(batch, labels)
        loss.backward()
        nn.utils.clip_grad_norm_(step.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return run


def plain_step(model, cfg, batch, labels, forward=None):
    """A plain step: CE(model(x), y), backward, clip, AdamW (what any training script does)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    forward = forward or model

    def run():
        loss = F.cross_entropy(forward(batch), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return run


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), timm {timm.__version__}, "
          f"python {sys.version.split()[0]}")
    print("| case | reference step, min (ms) | candidate step, min (ms) | median paired ratio | ratio of minima "
          "| claim | holds |")
    print("|---|---|---|---|---|---|---|")
    rows = []

    # ---- our ViT at the vit-fashion-mnist recipe's size
    cfg = resolve("vit-fashion-mnist")
    vit_cfg = ViTConfig(image_size=28, in_chans=1, patch_size=cfg.vit_patch, depth=cfg.vit_depth,
                        width=cfg.vit_width, heads=cfg.vit_heads, mlp_ratio=cfg.vit_mlp_ratio, num_classes=10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.batch_size, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (cfg.batch_size,), generator=g)
    torch.manual_seed(0)
    std_vit, ali_vit = VisionTransformer(vit_cfg), VisionTransformer(vit_cfg)
    ali_vit.load_state_dict(std_vit.state_dict())
    rows.append(compare(f"ViT (6x128, patch 7), batch {cfg.batch_size}: aligned / standard (loop step)",
                        loop_step(adapt(std_vit), "standard", cfg, x, y),
                        loop_step(adapt(ali_vit), "aligned", cfg, x, y), args.repeats, 1.05))
    plain_vit = VisionTransformer(vit_cfg)
    plain_vit.load_state_dict(std_vit.state_dict())
    loop_vit = VisionTransformer(vit_cfg)
    loop_vit.load_state_dict(std_vit.state_dict())
    rows.append(compare(f"ViT, batch {cfg.batch_size}: loop standard step / plain CE(model(x)) step",
                        plain_step(plain_vit, cfg, x, y), loop_step(adapt(loop_vit), "standard", cfg, x, y),
                        args.repeats, 1.05))
    ours = VisionTransformer(vit_cfg)
    theirs = timm.models.vision_transformer.VisionTransformer(**timm_kwargs(vit_cfg))
    theirs.load_state_dict(state_dict_to_timm(ours.state_dict()))
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x[:8]), theirs.eval()(x[:8]), atol=1e-5)  # the same network
    rows.append(compare(f"ViT, batch {cfg.batch_size}: ours / timm VisionTransformer (plain step)",
                        plain_step(theirs, cfg, x, y), plain_step(ours, cfg, x, y), args.repeats, 1.0))

    # ---- MiniLM-L6 at the minilm-reviews recipe's size
    mcfg = resolve("minilm-reviews")
    batch = texts(mcfg.batch_size)
    labels = torch.randint(0, 2, (mcfg.batch_size,), generator=g)
    torch.manual_seed(0)
    std_lm = load_model("minilm-l6", num_labels=2, max_length=mcfg.max_length)
    torch.manual_seed(0)
    ali_lm = load_model("minilm-l6", num_labels=2, max_length=mcfg.max_length)
    encoded = std_lm.encode(batch)  # tokenise once: the comparison is about the step, not the tokenizer
    rows.append(compare(f"MiniLM-L6, batch {mcfg.batch_size} (max {mcfg.max_length} tokens): aligned / standard "
                        "(loop step)", loop_step(std_lm, "standard", mcfg, encoded, labels),
                        loop_step(ali_lm, "aligned", mcfg, encoded, labels), max(5, args.repeats // 2), 1.05))
    return rows


if __name__ == "__main__":
    main()
