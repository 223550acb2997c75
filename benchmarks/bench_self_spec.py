"""Self-speculative decoding against plain greedy decoding with the same cache: tokens per second, as paired
ratios in one process, with the speed-up predicted from one teacher-forced pass beside the measured one, and
transformers' ``generate(assistant_early_exit=E)`` as the peer baseline. Writes benchmarks/self_spec.md.

    PYTHONPATH=lib .venv/bin/python benchmarks/bench_self_spec.py [--threads 2] [--skip-smollm2]

Models: the default profile's small GPT (recipe gpt-english: 4 blocks, width 128, vocabulary 2,048) trained
standard, aligned and aligned with one sampled layer per token (trained and cached on first use, as notebooks
09 and 11 do), and SmolLM2-135M as it ships (30 layers, vocabulary 49,152).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from layersim import data, early_exit, experiments, lm, models
from layersim.train import load_run

HERE = Path(__file__).resolve().parent


def table_md(df) -> str:
    cols = ["exit layer", "drafts k", "acceptance (predicted)", "acceptance (measured)", "tokens/pass (predicted)",
            "tokens/pass (measured)", "speed-up (predicted)", "speed-up (measured)", "plain tokens/s", "identical"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def small_gpt(args, out: dict) -> list:
    runs = experiments.train_models("gpt-english", ["standard", "aligned"], device="cpu")
    runs["aligned (sampled)"] = experiments.train_models("gpt-english", ["aligned"], device="cpu",
                                                         overrides={"layer_sampling": "token"})["aligned"]
    test = runs["standard"].test_split()
    sequences = test.take(range(len(test)))[0]
    held_out, prompts = sequences[:64], experiments.prompts_from(sequences[64:], args.prompts, 16)
    lines = [f"## Small GPT (gpt-english, default profile): {len(prompts)} test prompts of 16 tokens, "
             f"{args.new_tokens} new tokens, {args.repeats} paired repeats\n"]
    for name, run in runs.items():
        agreement = experiments.draft_agreement_on(run.adapter, held_out)
        t = experiments.speculation_table(run.adapter, prompts, agreement, exit_layers=[1, 2, 3],
                                          draft_tokens=[1, 2, 3, 4], max_new_tokens=args.new_tokens,
                                          repeats=args.repeats)
        last = run.log[-1]
        out[f"gpt-english {name}"] = {"agreement": agreement.tolist(), "table": t.to_dict(orient="records"),
                                      "steps": last["step"], "train_time_s": last["train_time_s"],
                                      "layer_acc": run.layer_acc}
        lines += [f"### {name} ({last['step']} steps, {last['train_time_s']:.0f} s of training; next-token "
                  f"accuracy per layer {', '.join(f'{a:.3f}' for a in run.layer_acc)})\n",
                  "Teacher-forced agreement with layer L per layer (64 test sequences): "
                  + ", ".join(f"{a:.3f}" for a in agreement.tolist()) + "\n", table_md(t), ""]
        best = t.loc[t["speed-up (measured)"].idxmax()]
        peer = experiments.transformers_early_exit_speedup(run.adapter, prompts[:2], exit_layer=int(best["exit layer"]),
                                                           draft_tokens=int(best["drafts k"]),
                                                           max_new_tokens=args.new_tokens, repeats=1)
        out[f"gpt-english {name}"]["transformers_assistant_early_exit"] = peer
        lines += [f"transformers `assistant_early_exit` at the best setting: {peer}\n"]
    return lines


def smollm2_model(args, out: dict, name: str, model, note: str = "") -> list:
    """One SmolLM2 (as shipped or fine-tuned): agreement per layer, the best (E, k) predicted over every exit
    layer, and the measured table at exits 6, 10, 15, 20 and the predicted best."""
    corpus = data.load_english_corpus()
    seqs = lm.lm_sequences(model.tokenizer, corpus.test, 128, max_sequences=16 + args.prompts)
    agreement = experiments.draft_agreement_on(model, seqs[:16], batch_size=4)
    prompts = experiments.prompts_from(seqs[16:], args.prompts, 16)
    costs = early_exit.measure_decode_costs(model, max_draft=4, context=16 + args.new_tokens // 2)
    grid = early_exit.predict_speedup(agreement, costs, draft_tokens=[1, 2, 3, 4])
    best = max(grid, key=lambda r: r["speedup"])
    exits = sorted({6, 10, 15, 20, best["exit_layer"]})
    t = experiments.speculation_table(model, prompts, agreement, exit_layers=exits,
                                      draft_tokens=sorted({1, 3, best["draft_tokens"]}),
                                      max_new_tokens=args.new_tokens, repeats=1)
    peers = [experiments.transformers_early_exit_speedup(model, prompts, exit_layer=E, draft_tokens=3,
                                                         max_new_tokens=args.new_tokens, repeats=1)
             for E in sorted({6, 10, best["exit_layer"]})]
    out[name] = {"agreement": agreement.tolist(), "predicted_best": best, "table": t.to_dict(orient="records"),
                 "transformers_assistant_early_exit": peers}
    return [f"## {name}: {len(prompts)} prompts of 16 tokens, {args.new_tokens} new tokens\n", *([note] if note else []),
            "Teacher-forced agreement with layer 30 (16 test sequences of 128 tokens): " + ", ".join(
                f"{E}: {agreement[E - 1]:.3f}" for E in (1, 2, 4, 6, 8, 10, 15, 20, 25, 29)) + "\n",
            f"Best predicted over E = 1..29, k = 1..4: E = {best['exit_layer']}, k = {best['draft_tokens']}, "
            f"speed-up {best['speedup']:.3f} (acceptance {best['acceptance']:.3f}).\n",
            table_md(t), "",
            "transformers `generate(assistant_early_exit=E, num_assistant_tokens=3)` over its own greedy `generate`:\n",
            "| E | speed-up | identical |", "|---|---|---|",
            *[f"| {p['exit_layer']} | {p.get('speedup', float('nan')):.3f} | {p.get('identical', p.get('error'))} |"
              for p in peers], ""]


def smollm2(args, out: dict) -> list:
    lines = smollm2_model(args, out, "SmolLM2-135M as shipped", models.load_model("smollm2-135m"))
    for folder in args.smollm2_run:
        run = load_run(folder)
        last = run.log[-1]
        note = (f"Fine-tuned from the shipped weights in `{folder}` ({run.config.objective}, layer_sampling "
                f"{run.config.layer_sampling}, sampled_fraction {run.config.sampled_fraction}, lr {run.config.lr}, "
                f"{last['step']} steps of {run.config.batch_size} x {run.config.seq_len} tokens, "
                f"{last['train_time_s']:.0f} s of training; held-out perplexity at layer 30 "
                f"{last['layer_ppl'][-1]:.2f}, next-token accuracy per layer 6 / 10 / 15 / 20 / 30: "
                + " / ".join(f"{run.layer_acc[E - 1]:.3f}" for E in (6, 10, 15, 20, 30)) + ")\n")
        lines += smollm2_model(args, out, f"SmolLM2-135M {run.config.objective}-fine-tuned ({Path(folder).name})",
                               run.adapter, note)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--skip-gpt", action="store_true", help="only SmolLM2 (writes OUT.md / OUT.json)")
    parser.add_argument("--smollm2-run", action="append", default=[], metavar="DIR",
                        help="also a SmolLM2 fine-tuned by layersim.train in DIR (repeatable)")
    parser.add_argument("--out", default="self_spec", help="file stem in benchmarks/ (default self_spec)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out: dict = {}
    begin = time.time()
    lines = ["# Self-speculative decoding vs plain greedy decoding (same cache, same block loop)\n",
             f"Command: `PYTHONPATH=lib .venv/bin/python benchmarks/bench_self_spec.py {' '.join(sys.argv[1:])}` "
             f"({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, torch {torch.__version__}, "
             f"{args.threads} threads, CPU). Speed-ups are paired ratios measured in one process (machines are "
             "noisy); predicted = from one teacher-forced pass and the measured block/head costs "
             "(`layersim.early_exit.predict_speedup`).\n"]
    if not args.skip_gpt:
        lines += small_gpt(args, out)
    if not args.skip_smollm2:
        lines += smollm2(args, out)
    lines.append(f"Total benchmark time: {time.time() - begin:.0f} s.")
    (HERE / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    (HERE / f"{args.out}.json").write_text(json.dumps(out, indent=1, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
