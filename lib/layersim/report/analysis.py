"""The numbers of a report, streamed over the data one batch at a time.

Each batch goes through `layersim.extract.extract` (features of every layer and the readout statistics of
the model's own last-layer classifier on every layer). The similarity matrices come from the streaming
accumulators of `layersim.metrics` (`StreamingCKA` in one pass; `StreamingCOS` needs the global means, so
the pooled features are spilled to a temporary file and read back once): memory does not grow with n.
Readout statistics are running sums (accuracy, agreement with the final prediction, probability of the
final prediction, log-probability of the next token) and a saturation histogram.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..early_exit import count_flops, minimal_depth, saturation
from ..extract import extract
from ..metrics import StreamingCKA, StreamingCOS, StreamingMean
from ..models import LayerAdapter, eval_mode
from ..progress import progress
from .inputs import Inputs, ReportError, modality

TOP_K = 5
EXAMPLE_POSITIONS = 4  # token positions shown per example sequence (LM)
EXAMPLES = 2


def default_pooling(adapter: LayerAdapter) -> str:
    """The samples compared: what the head reads (tokens for an LM); a bare text encoder's mean over tokens
    (sentence encoders are trained for it), a bare vision backbone's class token where it has one."""
    if adapter.has_readout:
        return adapter.readout_pooling
    if modality(adapter) == "text" or not adapter.has_class_token:
        return "mean"
    return "cls"


class _Spill:
    """Pooled features (L, b, d) of every batch appended to one float32 file, read back batch by batch."""

    def __init__(self, folder: Path):
        self.path, self.shapes = folder / "features.f32", []

    def write(self, feats: torch.Tensor) -> None:
        with open(self.path, "ab") as f:
            f.write(feats.float().contiguous().numpy().tobytes())
        self.shapes.append(tuple(feats.shape))

    def __iter__(self):
        offset = 0
        for shape in self.shapes:
            count = int(np.prod(shape))
            yield torch.from_numpy(np.fromfile(self.path, np.float32, count, offset=offset).reshape(shape))
            offset += 4 * count


def analyse(adapter: LayerAdapter, inputs: Inputs, *, pooling: str | None = None, feature_norm: str = "normed",
            show_progress: bool = True, embeddings: bool = False) -> dict:
    """Every number of the report as plain Python lists and floats (JSON-ready). Shapes: ``cos``/``cka``
    (L, L); per-layer lists have L entries, layer l at index l-1. With `embeddings` the similarity numbers
    (``cos``, ``cka`` (L+1, L+1), ``cos_to_last``, ``cka_to_last`` (L+1,)) start at the embedding output,
    layer 0 (``first_layer``); the readout stays 1..L."""
    pooling = default_pooling(adapter) if pooling is None else pooling
    if embeddings and pooling == "cls":
        raise ReportError("layer 0 (the embedding output) at the class token is the same vector for every input, so "
                          "its similarity to other layers is undefined: with embeddings use pooling='mean' "
                          "(--pooling mean)")
    readout = adapter.has_readout and pooling in adapter.readout_poolings
    L, lm = adapter.num_layers, adapter.vocabulary_readout
    sums = {k: torch.zeros(L, dtype=torch.float64) for k in ("correct", "agree", "final_prob", "logprob")}
    histogram, samples, examples = torch.zeros(L, dtype=torch.long), 0, []
    mean, cka = StreamingMean(), StreamingCKA()
    times = {"read": 0.0, "similarity": 0.0}
    timed = min(1, len(inputs.batches) - 1)  # the batch whose reading is split into blocks and heads (not the first:
    timing = None                            # it pays for warm-up)
    with tempfile.TemporaryDirectory(prefix="layersim-report-") as tmp:
        spill = _Spill(Path(tmp))
        for i, (x, y) in enumerate(progress(inputs.batches, desc=f"report {adapter.name}", unit="batch",
                                            disable=not show_progress)):
            if i == timed:
                timing = _plain_and_blocks(adapter, x)
            start = time.perf_counter()
            out = extract(adapter, [x] if isinstance(x, dict) else x, labels=None if isinstance(x, dict) else y,
                          pooling=pooling, readout=readout, keep_logits=False, topk=TOP_K if lm else None,
                          feature_norm=feature_norm, batch_size=len(x["input_ids"]) if isinstance(x, dict) else len(x),
                          progress=False, embeddings=embeddings)
            times["read"] += time.perf_counter() - start
            if i == timed:
                timing["read_s"] = time.perf_counter() - start
            start = time.perf_counter()
            compared = torch.cat([out.embedding, out.features]) if embeddings else out.features
            feats = compared.double()
            if feats.shape[1] == 0:
                continue
            mean.update(feats)
            cka.update(feats)
            spill.write(compared)
            times["similarity"] += time.perf_counter() - start
            samples += feats.shape[1]
            if readout:
                preds = out.preds
                sums["agree"] += (preds == preds[-1:]).double().sum(1)
                sums["final_prob"] += out.final_prob.double().sum(1)
                if out.labels is not None and (lm or inputs.labels):  # labels: in the dict of token ids
                    sums["correct"] += (preds == out.labels[None]).double().sum(1)
                if out.label_logprob is not None:
                    sums["logprob"] += out.label_logprob.double().sum(1)
                histogram += saturation(preds).histogram
                if lm and len(examples) < EXAMPLES:
                    examples += _lm_examples(adapter, x, out, EXAMPLES - len(examples))
        if samples < 2:
            raise ReportError(f"the data gave {samples} sample(s) to compare (pooling {pooling!r}); similarity needs "
                              "at least 2" + (": are the texts single tokens?" if lm else ""))
        start = time.perf_counter()
        cos = StreamingCOS(mean=mean.compute())
        for feats in spill:
            cos.update(feats.double())
        cos_matrix, cka_matrix = cos.compute(), cka.compute()
        times["similarity"] += time.perf_counter() - start
    numbers = {"layers": L, "samples": samples, "pooling": pooling, "feature_norm": feature_norm,
               "readout": readout, "first_layer": 0 if embeddings else 1, "cos": cos_matrix.tolist(),
               "cka": cka_matrix.tolist(),
               "cos_to_last": cos_matrix[:, -1].tolist(), "cka_to_last": cka_matrix[:, -1].tolist()}
    if readout:
        numbers.update(_readout_numbers(adapter, inputs, sums, histogram, samples, lm))
        numbers["examples"] = examples
    numbers["seconds"] = {k: round(v, 3) for k, v in times.items()}
    if timing is not None:
        t = {k: round(v, 6) for k, v in timing.items()}  # the ratio and the heads from the numbers as recorded
        numbers["timing"] = {**t, "batch": timed, "blocks_over_forward": t["blocks_s"] / max(t["plain_forward_s"], 1e-6),
                             "heads_s": round(max(t["read_s"] - t["blocks_s"], 0.0), 6)}
    return numbers


def _plain_and_blocks(adapter, x) -> dict:
    """Seconds of one plain forward of the model on batch x and of running its blocks for every layer's states
    (``hidden_states``): what reading all layers costs beyond the model itself, before any head is applied."""
    with torch.no_grad(), eval_mode(adapter.model):
        start = time.perf_counter()
        adapter.run_model(x)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        adapter.hidden_states(x)
        blocks = time.perf_counter() - start
    return {"plain_forward_s": plain, "blocks_s": blocks}


def _readout_numbers(adapter, inputs, sums, histogram, samples, lm) -> dict:
    agreement = sums["agree"] / samples
    out = {"agreement_with_final": agreement.tolist(), "final_prob": (sums["final_prob"] / samples).tolist(),
           "saturation_histogram": histogram.tolist(),
           "early_saturation": float(histogram[:-1].sum()) / samples}
    has_accuracy = lm or inputs.labels
    if has_accuracy:
        out["accuracy"] = (sums["correct"] / samples).tolist()
    if lm:
        out["perplexity"] = torch.exp(-sums["logprob"] / samples).tolist()
    basis = "accuracy" if has_accuracy and out["accuracy"][-1] > 0 else "agreement with the final prediction"
    curve = out["accuracy"] if basis == "accuracy" else agreement.tolist()
    depth = minimal_depth(curve, 0.99)
    out["minimal_depth"] = {"layer": depth, "basis": basis, "fraction": 0.99, "value": curve[depth - 1],
                            "final": curve[-1]}
    out["flops"] = _flops(adapter, inputs, depth)
    return out


def _flops(adapter, inputs, depth: int) -> dict:
    """Per-sample FLOPs of the full forward and of exiting at `depth` (reading that layer only)."""
    x = inputs.batches[0][0]
    x = {k: v[:2] for k, v in x.items()} if isinstance(x, dict) else x[:4]
    try:
        profile = count_flops(adapter, x)
    except (NotImplementedError, ValueError) as e:
        return {"available": False, "why": str(e).splitlines()[0]}
    full = profile.full_cost()
    exit_cost = float(profile.layer_costs(every_layer=False)[depth - 1])
    return {"available": True, "full": full, "exit": exit_cost, "saved_fraction": 1 - exit_cost / full,
            "per_layer": profile.layer_costs(every_layer=False).tolist(), "unit": "FLOPs per sample"}


def _decode(tok, ids) -> str:
    """Token ids as text (as ids in angle brackets for a model given without its tokenizer)."""
    return tok.decode(ids) if tok is not None else " ".join(f"<{int(i)}>" for i in ids)


def _lm_examples(adapter, batch, out, count: int) -> list:
    """Top tokens at every layer at a few positions of the first `count` sequences of a batch."""
    tok, enc = adapter.tokenizer, adapter.encode(batch)
    ids, mask = enc["input_ids"].cpu(), enc["attention_mask"].bool().cpu()
    has_next = torch.cat([mask[:, :-1] & mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    row_of = has_next.flatten().long().cumsum(0).reshape(has_next.shape) - 1  # row of (sequence, position) in out
    examples = []
    for s in range(min(count, ids.shape[0])):
        last = int(has_next[s].nonzero().max()) if has_next[s].any() else -1
        if last < 0:
            continue
        rows = []
        for p in dict.fromkeys(np.linspace(last // 4, last, EXAMPLE_POSITIONS).round().astype(int).tolist()):
            row = int(row_of[s, p])
            rows.append({"position": p, "context": _decode(tok, ids[s, max(0, p - 12):p + 1]),
                         "next": _decode(tok, ids[s, p + 1:p + 2]),
                         "top_tokens": [[_decode(tok, [int(t)]) for t in out.topk_ids[l, row]]
                                        for l in range(len(out.layers))],
                         "top_probs": out.topk_probs[:, row].tolist()})
        examples.append({"sequence": s, "positions": rows})
    return examples
