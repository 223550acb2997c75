"""What aligned fine-tuning of SmolLM2-135M costs on this machine (issue 11: default or paper profile?).

Runs the real training path, `layersim.train.train` with recipe ``smollm2-english`` (SmolLM2-135M, 30 layers,
vocabulary 49,152, batches of 8 x 128 tokens of the offline English corpus), for a few optimizer steps with
the standard and the aligned objective (the aligned loss through the fused linear + cross-entropy), and
reads the training time the loop records (evaluation excluded; a one-sequence test split keeps the final
evaluation short). From the time per step it extrapolates the recipe's 300 steps and compares them with the
default profile's budget of 15 minutes for this experiment.

    PYTHONPATH=lib .venv/bin/python benchmarks/bench_lm_finetune.py [--steps 4] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

BUDGET_S = 15 * 60


def measure(objective: str, steps: int, folder: str) -> dict:
    from layersim.train import resolve, train

    cfg = resolve("smollm2-english", {"objective": objective, "max_steps": steps, "n_test": 1,
                                      "checkpoint_every": 0, "progress": False})
    start = time.perf_counter()
    run = train(cfg, f"{folder}/{objective}")
    wall = time.perf_counter() - start
    record = run.log[-1]
    per_step = record["train_time_s"] / steps
    return {"objective": objective, "steps": steps, "tokens_per_step": cfg.batch_size * cfg.seq_len,
            "train_time_s": record["train_time_s"], "s_per_step": per_step,
            "recipe_steps": resolve("smollm2-english").max_steps,
            "extrapolated_s": per_step * resolve("smollm2-english").max_steps, "wall_s_incl_load_eval": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for objective in ("standard", "aligned"):
            rows.append(measure(objective, args.steps, folder))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| objective | s / step (8 x 128 tokens) | 300 steps (extrapolated) | within 15 min? |")
    print("|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['objective']} | {r['s_per_step']:.1f} | {r['extrapolated_s'] / 60:.0f} min | "
              f"{'yes' if r['extrapolated_s'] <= BUDGET_S else 'no'} |")
    print(f"\naligned / standard time per step: {rows[1]['s_per_step'] / rows[0]['s_per_step']:.2f}x")


if __name__ == "__main__":
    main()
