"""Real early-exit inference: forward passes that stop at the exit layer.

- `exit_at_layer(adapter, batch, layer)`: the whole batch stops at `layer` (a truncated forward; blocks
  after `layer` never run) and is read out there.
- `early_exit(adapter, batch, policy)`: per-sample exits; the model is stepped block by block
  (``adapter.begin``, ``adapter.run_blocks``), every running sample is read out after each block, and the samples the policy
  lets go leave the batch (`BlockState.select`), so later blocks run on fewer samples.
- `generate_at_layer(adapter, prompt, layer)`: a causal LM generates text greedily with every token read
  out at layer `layer` (the forward is recomputed from scratch at every step, without a KV cache: simple
  and exact, fine for small models).
- `paired_speedup(reference, candidate)`: wall-clock speed-up measured as paired ratios in one process.

Readers: by default every layer is read by the model's own last-layer classifier (the paper's shared
head, ``adapter.reader``); ``reader=`` takes another `layersim.models.Reader`, e.g. a multi-exit model's
`ExitHeads` (``run.heads``, or ``ExitHeads.for_adapter(adapter)`` for our ViT built with ``multi_exit=True``).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Optional

import torch

from layersim.metrics.readout import check_labels, readout_stats
from layersim.models import adapt, as_reader, eval_mode
from layersim.validate import ArgumentTypeError, whole_number

from .policies import ExitPolicy, ExitResult
from .speculative import prompt_ids

__all__ = ["per_layer_logits", "exit_at_layer", "early_exit", "generate_at_layer",
           "paired_speedup"]


def _check_layer(layer, num_layers: int) -> int:
    return whole_number(layer, "exit layer", low=1, high=num_layers,
                        what=f"an integer in 1..{num_layers} (layers are numbered from 1)")


def _reader(adapter, reader):
    if not adapter.has_readout:
        raise ValueError(f"{adapter.name} has no classification head, so there is nothing to exit with; attach "
                         "one (e.g. load_model(..., num_labels=2)) or pass reader=ExitHeads.for_adapter(adapter)")
    return as_reader(adapter, reader)


def per_layer_logits(adapter, batch, *, reader=None) -> torch.Tensor:
    """(L, B, C) logits of every layer from one full forward, read by `reader` (default the shared head;
    an `ExitHeads` for a multi-exit model). The rows are what `simulate` and `sweep` take."""
    adapter = adapt(adapter)
    reader = _reader(adapter, reader)
    with torch.no_grad(), eval_mode(adapter.model):
        return adapter.read(adapter.hidden_states(batch), reader=reader)


# ---- fixed exit ------------------------------------------------------------------------------------------
def exit_at_layer(adapter, batch, layer: int, *, reader=None) -> torch.Tensor:
    """(B, C) logits of the batch read out at `layer` (1..L) by a forward that runs blocks 1..layer only.

    Equals the full model's readout at `layer` (``per_layer_logits(adapter, batch)[layer - 1]``); at
    layer L with the shared head it is the model's own output. reader: see `per_layer_logits`.
    """
    adapter = adapt(adapter)
    _check_layer(layer, adapter.num_layers)
    reader = _reader(adapter, reader)
    with torch.no_grad(), eval_mode(adapter.model):
        hidden = adapter.hidden_states(batch, upto=layer)
        return adapter.read(hidden, layers=[layer], reader=reader)[0]


# ---- per-sample exits ------------------------------------------------------------------------------------
def early_exit(adapter, batch, policy: ExitPolicy, *, reader=None, labels=None) -> ExitResult:
    """Per-sample early exit: step the model block by block, read out the running samples after every block
    the policy looks at, and drop those it lets go from the batch.

    adapter: our ViT, a timm ViT/DeiT or a Hugging Face encoder (or their adapters). batch: what the adapter
    reads (images (B, C_in, H, W), texts, a tokenised dict). policy: an `ExitPolicy`, e.g.
    ``ConfidenceExit(0.9)``. reader: see `per_layer_logits`. labels: (B,) for the accuracy.
    -> `ExitResult` with exit_layer (B,) in 1..L, preds (B,), logits (B, C) at each sample's exit.
    """
    adapter = adapt(adapter)
    if not isinstance(policy, ExitPolicy):
        raise TypeError(f"policy must be an ExitPolicy (e.g. ConfidenceExit(0.9)), got {type(policy).__name__}")
    num_layers = adapter.num_layers
    policy.check(num_layers)
    reader = _reader(adapter, reader)
    with torch.no_grad(), eval_mode(adapter.model):
        state = adapter.begin(batch)
        n = state.tokens.shape[0]
        device = state.tokens.device
        if labels is not None:
            labels = check_labels(labels, n, adapter.num_classes, where=f"{adapter.name} has "
                                  f"{adapter.num_classes} classes")
        exit_layer = torch.zeros(n, dtype=torch.long, device=device)
        logits_out: Optional[torch.Tensor] = None
        pstate = policy.start(n, device=device)
        for layer in range(1, num_layers + 1):
            if not policy.decides_at(layer, num_layers) and layer < num_layers:
                continue
            state = adapter.run_blocks(state, layer)
            logits = reader(adapter.state_head_inputs(state), layer)
            if logits_out is None:
                logits_out = logits.new_zeros(n, logits.shape[-1])
            stats = readout_stats(logits, confidence=bool({"confidence", "entropy"} & set(policy.reads)))
            rows = state.index
            stop = policy.exit_now(layer, stats, rows, pstate).to(device)
            if layer == num_layers:
                stop = torch.ones_like(stop)
            exit_layer[rows[stop]] = layer
            logits_out[rows[stop]] = logits[stop]
            if bool(stop.all()):
                break
            if bool(stop.any()):
                state = state.select(~stop)
    preds = logits_out.argmax(-1)
    accuracy = float((preds.cpu() == labels).double().mean()) if labels is not None and n else None
    return ExitResult(policy.name, policy.parameter, exit_layer.cpu(), preds.cpu(), accuracy,
                      float(exit_layer.double().mean()) if n else float("nan"), None, logits_out)


# ---- causal LM generation ---------------------------------------------------------------------------------
def generate_at_layer(adapter, prompt, layer: int, *, max_new_tokens: int = 20,
                      stop_at_eos: bool = True) -> dict:
    """Greedy generation by a causal LM whose every token is read out at `layer` (1..L):
    lm_head(norm(h_layer)) of the last position (the adapter's readout; ``final_norm=False`` skips the norm).

    The forward runs blocks 1..layer only and is recomputed over the whole sequence at every step (no KV
    cache): exact and simple, fine for small models; cost grows with the square of the length.
    prompt: a string (needs the adapter's tokenizer) or a (1, T) tensor of token ids.
    stop_at_eos: stop after the end-of-sequence token (the tokenizer's, else the model config's).
    -> dict with ``ids`` (1, T + new) token ids, ``new_ids`` the generated ids, and ``text`` (with a tokenizer).
    """
    adapter = adapt(adapter)
    if not adapter.vocabulary_readout or adapter.readout_pooling != "tokens":
        raise ValueError(f"{adapter.name} is not a causal language model; generate_at_layer needs one "
                         "(e.g. load_model('smollm2-135m'))")
    _check_layer(layer, adapter.num_layers)
    max_new_tokens = whole_number(max_new_tokens, "max_new_tokens", low=1)
    tokenizer = getattr(adapter, "tokenizer", None)
    ids = prompt_ids(adapter, prompt)
    eos = getattr(tokenizer, "eos_token_id", None) or getattr(adapter.model.config, "eos_token_id", None)
    eos = eos if stop_at_eos else None
    start = ids.shape[1]
    with torch.no_grad(), eval_mode(adapter.model):
        for _ in range(max_new_tokens):
            hidden = adapter.hidden_states({"input_ids": ids}, upto=layer)
            last = adapter.head_inputs(hidden, "last", layers=[layer])[0]  # (1, d): the last position
            token = adapter.reader(last, layer).argmax(-1)  # (1,)
            ids = torch.cat([ids, token[:, None]], dim=1)
            if eos is not None and int(token) == eos:
                break
    out = {"ids": ids.cpu(), "new_ids": ids[0, start:].cpu(), "layer": layer}
    if tokenizer is not None:
        out["text"] = tokenizer.decode(ids[0, start:])
    return out


# ---- timing -----------------------------------------------------------------------------------------------
def paired_speedup(reference: Callable[[], object], candidate: Callable[[], object], *, repeats: int = 11,
                   warmup: int = 1) -> dict:
    """Wall-clock speed-up of `candidate` over `reference` (time_reference / time_candidate), measured in
    this process as paired ratios: each repeat times both back to back, alternating which goes first, and
    the median of the per-pair ratios is the result (robust to load drifting on a shared machine).
    -> dict with speedup (median paired ratio), reference_s and candidate_s (medians), and the raw times.
    """
    repeats = whole_number(repeats, "repeats", low=1)
    warmup = whole_number(warmup, "warmup", low=0)
    for name, fn in (("reference", reference), ("candidate", candidate)):
        if not callable(fn):
            raise ArgumentTypeError(f"{name} must be a function of no arguments to time, got {type(fn).__name__}")
    for _ in range(warmup):
        reference(), candidate()
    t_ref, t_cand = [], []

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    for i in range(repeats):
        if i % 2:
            t_cand.append(timed(candidate))
            t_ref.append(timed(reference))
        else:
            t_ref.append(timed(reference))
            t_cand.append(timed(candidate))
    ratios = [r / c for r, c in zip(t_ref, t_cand)]
    return {"speedup": statistics.median(ratios), "reference_s": statistics.median(t_ref),
            "candidate_s": statistics.median(t_cand), "reference_times": t_ref, "candidate_times": t_cand,
            "ratios": ratios}
