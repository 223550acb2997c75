"""Per-token confidence exit for generation (CALM, Schuster et al. 2022): each new token stops at the first
layer whose shared-head prediction is confident enough; the layers it skipped get their cache entries for
that position from the exit state (state propagation), so later tokens attend to something at every layer.

Unlike self-speculative decoding this is *not* lossless: a token that exits early may differ from the full
model's, and the text drifts from there. `confidence_exit_sweep` measures both sides against the threshold:
agreement with the model's own greedy output and the time against plain greedy decoding with the same cache.

>>> out = confidence_generate(adapter, "The film was", threshold=0.9, max_new_tokens=32)
>>> out.exit_layers                     # the layer each token left at
"""
from __future__ import annotations

import time

import torch

from layersim.models import eval_mode
from layersim.validate import ArgumentTypeError, real_number, whole_number

from .speculative import Generation, _finish, _prefill, _start, check_prompts, greedy_generate

__all__ = ["confidence_generate", "confidence_exit_sweep"]


def confidence_generate(adapter, prompt, *, threshold: float, max_new_tokens: int = 20,
                        stop_at_eos: bool = True) -> Generation:
    """Greedy decoding where every new token leaves at the first layer l < L whose shared head gives its top
    token a softmax probability >= `threshold` (else at L). The skipped layers' keys and values for that
    position come from the exit state (`DecoderSteps.propagate`). threshold in (0, 1]; 1 never exits early
    unless a probability rounds to 1. -> `Generation` with ``exit_layers``."""
    adapter, steps, ids, max_new_tokens, eos = _start(adapter, prompt, max_new_tokens, stop_at_eos)
    threshold = real_number(threshold, "threshold", low=0.0, high=1.0, low_open=True,
                            what="a probability in (0, 1] (the confidence a token needs to leave early)")
    L = adapter.num_layers
    with torch.no_grad(), eval_mode(adapter.model):
        begin = time.perf_counter()
        cache, first = _prefill(steps, ids)
        new, exits = [first], [L]
        while len(new) < max_new_tokens and new[-1] != eos:
            pos = ids.shape[1] + len(new) - 1
            h = steps.embed(torch.tensor([[new[-1]]], device=ids.device), pos)
            for layer in range(1, L + 1):
                h = steps.blocks(h, layer, layer, cache, pos)
                logits = steps.read(h[0, -1], layer)
                if layer < L and float(torch.softmax(logits.double(), -1).max()) >= threshold:
                    steps.propagate(h, layer + 1, L, cache, pos)
                    break
            new.append(int(logits.argmax()))
            exits.append(layer)
        seconds = time.perf_counter() - begin
    return _finish(adapter, ids, new, seconds, eos, max_new_tokens, exit_layers=exits[:max_new_tokens])


def confidence_exit_sweep(adapter, prompts, thresholds, *, max_new_tokens: int = 32) -> list[dict]:
    """For every threshold: the mean exit layer of the new tokens, the share of positions whose token equals
    the model's own greedy decoding, how many tokens agree before the first difference (mean over prompts),
    and the speed-up over plain greedy decoding with the same cache (total times over the prompts, each
    timed once after a warm-up). -> one dict per threshold."""
    check_prompts(prompts)
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__iter__"):
        raise ArgumentTypeError(f"thresholds must be a list of probabilities in (0, 1], got {type(thresholds).__name__} "
                                f"{thresholds!r:.40}")
    thresholds = [real_number(t, "threshold", low=0.0, high=1.0, low_open=True,
                              what="a probability in (0, 1] (the confidence a token needs to leave early)")
                  for t in thresholds]
    if not thresholds:
        raise ValueError("thresholds is empty: give at least one probability in (0, 1]")
    max_new_tokens = whole_number(max_new_tokens, "max_new_tokens", low=1)
    greedy_generate(adapter, prompts[0], max_new_tokens=2)  # warm-up
    plain = [greedy_generate(adapter, p, max_new_tokens=max_new_tokens, stop_at_eos=False) for p in prompts]
    rows = []
    for threshold in thresholds:
        outs = [confidence_generate(adapter, p, threshold=threshold, max_new_tokens=max_new_tokens,
                                    stop_at_eos=False) for p in prompts]
        same = [(o.new_ids == g.new_ids) for o, g in zip(outs, plain)]
        prefix = [int(s.long().cumprod(0).sum()) for s in same]
        rows.append({"threshold": float(threshold),
                     "mean exit layer": float(torch.tensor([e for o in outs for e in o.exit_layers[1:]],
                                                           dtype=torch.float64).mean()),
                     "agreement with greedy": float(torch.cat(same).double().mean()),
                     "tokens before the first difference": sum(prefix) / len(prefix),
                     "speed-up": sum(g.seconds for g in plain) / sum(o.seconds for o in outs)})
    return rows
