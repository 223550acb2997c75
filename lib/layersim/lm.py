"""Language models read out at every layer: next-token accuracy, perplexity and saturation per layer.

Every token position of a causal LM is one sample, its target the next token (PAPER.md, "Features").
`layersim.extract.extract(lm, sequences, pooling="tokens")` streams the per-layer summaries (argmax,
top-k, probability of the final prediction, log-probability of the next token) without keeping the
vocabulary logits; this module turns them into the rows the paper reports.

>>> seqs = lm_sequences(adapter.tokenizer, texts, seq_len=128, max_sequences=16)   # (16, 128) token ids
>>> out = extract(adapter, [{"input_ids": s} for s in seqs.split(8)], pooling="tokens")
>>> report = next_token_report(out)      # accuracy (L,), perplexity (L,), saturation
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import data as D
from .early_exit import SaturationStats, saturation
from .validate import ArgumentTypeError, tensor_arg, whole_number

# The authors' GPT-2 (12 layers) fine-tuned on WikiText-103, next-token accuracy per layer 1..12 on the
# test split (418,776 tokens) and the fraction of early saturation (PAPER.md). For shape comparison.
AUTHORS_GPT2_ACCURACY = {
    "standard": {"accuracy": [.057, .061, .067, .080, .092, .108, .122, .153, .184, .212, .186, .399],
                 "early_saturation": 0.198},
    "aligned": {"accuracy": [.127, .191, .220, .241, .259, .288, .302, .318, .328, .336, .344, .349],
                "early_saturation": 0.477},
}


@dataclass
class NextTokenReport:
    """accuracy, perplexity: (L,) per layer (layer l read by the model's last-layer classifier);
    saturation: saturation layers of every token, their histogram and the early fraction;
    num_tokens: how many tokens (samples) were read."""

    accuracy: torch.Tensor
    perplexity: torch.Tensor
    saturation: SaturationStats
    num_tokens: int


def lm_sequences(tokenizer, texts, seq_len: int, *, max_sequences: int | None = None) -> torch.Tensor:
    """Documents -> (n, seq_len) token ids: encoded, joined by the end-of-text token, cut into pieces of
    `seq_len` (`layersim.data.tokenize_and_pack`); the first `max_sequences` when given."""
    sequences = D.tokenize_and_pack(tokenizer, texts, seq_len)
    if max_sequences is not None:
        max_sequences = whole_number(max_sequences, "max_sequences", low=1)
        sequences = sequences[:max_sequences]
    return sequences


def token_batches(sequences: torch.Tensor, batch_size: int) -> list:
    """(n, T) token ids -> a list of ``{"input_ids": (b, T)}`` batches, the form `extract` reads."""
    tensor_arg(sequences, "sequences", ndim=2, kind="integer", what="an (n, T) integer tensor of token ids")
    batch_size = whole_number(batch_size, "batch_size", low=1)
    return [{"input_ids": chunk} for chunk in sequences.split(batch_size)]


def next_token_report(extraction) -> NextTokenReport:
    """Per-layer next-token accuracy and perplexity, and saturation, from `extract(..., pooling="tokens")`
    of a causal LM (its ``preds`` (L, n), ``label_logprob`` (L, n) and ``labels`` (n,): the next tokens).
    Needs every layer (saturation is defined against the last one)."""
    if not all(hasattr(extraction, f) for f in ("preds", "label_logprob", "labels", "layers")):
        raise ArgumentTypeError(f"extraction must be an Extraction (from extract(lm, ..., pooling='tokens')), got "
                                f"{type(extraction).__name__}")
    for field in ("preds", "label_logprob", "labels"):
        if getattr(extraction, field, None) is None:
            raise ValueError(f"the extraction has no {field!r}: extract a causal LM with pooling='tokens' and "
                             "readout=True (the default for a language model)")
    preds, logprob, labels = extraction.preds, extraction.label_logprob, extraction.labels
    if list(extraction.layers) != list(range(1, preds.shape[0] + 1)):
        raise ValueError(f"a report needs every layer 1..L in order, the extraction holds {extraction.layers}")
    accuracy = (preds == labels[None]).double().mean(1)
    perplexity = torch.exp(-logprob.double().mean(1))
    return NextTokenReport(accuracy.float(), perplexity.float(), saturation(preds), int(labels.numel()))
