"""Predict the speed-up of self-speculative decoding before decoding, then measure it.

Prediction (`predict_speedup`): from one teacher-forced pass over held-out text, the share of tokens whose
layer-E prediction equals the final one (``agreement``, `draft_agreement`) estimates the chance a1 that a
draft is accepted; with acceptances independent, a pass of k drafts yields 1 + a + ... + a^k tokens. Its
cost, from the measured costs (`measure_decode_costs`: b(q) one block on q new tokens, c(q) one call of the
block loop beside its blocks, h(q) the head on q rows, at the given context length), is

    k (c(1) + E b(1) + h(1))  +  c(1) + E b(1)  +  c(k+1) + (L - E) b(k+1) + h(k+1)   (drafts, last draft, verify)

against c(1) + L b(1) + h(1) per token for plain decoding with the same cache. The best (E, k) is the largest ratio.

Measurement (`measure_speedup`): both decoders on the same prompts, timed as paired ratios in one process,
outputs compared token for token; a divergence is reported with the full model's logit gap between the two
tokens there (`first_divergence`: in float32 a divergence can only be a near-tie).
"""
from __future__ import annotations

import statistics
import time

import torch

from layersim.models import adapt, eval_mode
from layersim.models.decoder import decoder_steps
from layersim.validate import ArgumentTypeError, tensor_arg, to_tensor, whole_number

from .analysis import as_summaries, layerwise_accuracy
from .speculative import check_prompts, greedy_generate, prompt_ids, self_speculative_generate

__all__ = ["draft_agreement", "measure_decode_costs", "predict_speedup", "measure_speedup", "first_divergence"]


def draft_agreement(outputs) -> torch.Tensor:
    """(L,) the share of samples whose prediction at layer l equals the last layer's (1 at l = L).
    outputs: per-layer predictions (L, n), logits (L, n, V) or an extraction with ``preds`` (e.g.
    ``extract(lm, batches, pooling="tokens")``: every token of held-out text, teacher-forced)."""
    preds = as_summaries(outputs).preds
    return layerwise_accuracy(preds, preds[-1])


def measure_decode_costs(adapter, *, max_draft: int = 4, context: int = 64, repeats: int = 5) -> dict:
    """Seconds of decoding's parts on q = 1..max_draft+1 new tokens after a cached context of `context` tokens
    (medians of `repeats`): ``block`` b(q) one block, ``call`` c(q) what one call of the block loop costs beside
    its blocks (embedding, positions, mask: from timing 1 and L blocks), ``head`` h(q) the head on q rows and
    picking the tokens. -> {"block": [...], "call": [...], "head": [...], "num_layers": L, "context": context}."""
    adapter = adapt(adapter)
    steps = decoder_steps(adapter)
    max_draft = whole_number(max_draft, "max_draft", low=1)
    context = whole_number(context, "context", low=1, high=adapter.max_positions - max_draft - 1)
    repeats = whole_number(repeats, "repeats", low=1)
    L = adapter.num_layers
    ids = torch.randint(0, adapter.num_classes, (1, context + max_draft + 1),
                        generator=torch.Generator().manual_seed(0)).to(adapter.device)

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    block, call, head = [], [], []
    with torch.no_grad(), eval_mode(adapter.model):
        cache = steps.new_cache()
        steps.blocks(steps.embed(ids[:, :context], 0), 1, L, cache, 0)
        for q in range(1, max_draft + 2):
            new = ids[:, context:context + q]
            one, every, reads = [], [], []
            for _ in range(repeats + 1):  # the first is a warm-up
                t1, _ = timed(lambda: steps.blocks(steps.embed(new, context), 1, 1, cache, context))
                steps.keep(cache, context)
                tL, h = timed(lambda: steps.blocks(steps.embed(new, context), 1, L, cache, context))
                steps.keep(cache, context)
                th, _ = timed(lambda: steps.read(h[0], L).argmax(-1).tolist())
                one.append(t1), every.append(tL), reads.append(th)
            t1, tL = statistics.median(one[1:]), statistics.median(every[1:])
            b = (tL - t1) / (L - 1) if L > 1 else tL
            block.append(b)
            call.append(max(t1 - b, 0.0))
            head.append(statistics.median(reads[1:]))
    return {"block": block, "call": call, "head": head, "num_layers": L, "context": context}


def predict_speedup(agreement, costs: dict, *, exit_layers=None, draft_tokens=(1, 2, 3, 4)) -> list[dict]:
    """Predicted speed-up of self-speculative over plain decoding for every (E, k) (see the module's
    docstring). agreement: (L,) from `draft_agreement`; costs: from `measure_decode_costs` (max_draft >= every
    k). -> one row per (E, k): exit_layer, draft_tokens, agreement (a), acceptance (the expected share of drafts
    accepted, (a + a^2 + ... + a^k) / k: drafts after a rejection are wasted), tokens_per_pass, speedup."""
    L, b, c, h = _check_costs(costs)
    agreement = to_tensor(agreement, "agreement")
    if agreement.is_complex() or agreement.dtype == torch.bool:
        raise ValueError(f"agreement must be shares in [0, 1], got dtype {agreement.dtype}")
    agreement = agreement.to(torch.float64)
    if agreement.shape != (L,):
        raise ValueError(f"agreement must have one value per layer ({L}), got shape {tuple(agreement.shape)}")
    if not bool(((agreement >= 0) & (agreement <= 1)).all()):
        raise ValueError(f"agreement must be shares in [0, 1] (from draft_agreement), got {agreement.tolist()}")
    for name, value in (("exit_layers", exit_layers), ("draft_tokens", draft_tokens)):
        if value is not None and (isinstance(value, (str, bytes)) or not hasattr(value, "__iter__")):
            raise ArgumentTypeError(f"{name} must be a list of integers, got {type(value).__name__} {value!r:.40}")
    draft_tokens = list(draft_tokens)
    if not draft_tokens or (exit_layers is not None and not list(exit_layers)):
        raise ValueError("exit_layers and draft_tokens must each hold at least one value")
    exit_layers = list(range(1, L)) if exit_layers is None else list(exit_layers)
    rows = []
    for E in exit_layers:
        E = whole_number(E, "exit layer", low=1, high=L - 1)
        for k in draft_tokens:
            k = whole_number(k, "draft_tokens", low=1, high=len(b) - 1,
                             what=f"an integer in 1..{len(b) - 1} (measure_decode_costs' max_draft)")
            a = float(agreement[E - 1])
            tokens = float(sum(a ** i for i in range(k + 1)))
            round_cost = k * (c[0] + E * b[0] + h[0]) + (c[0] + E * b[0]) + (c[k] + (L - E) * b[k]) + h[k]
            rows.append({"exit_layer": E, "draft_tokens": k, "agreement": a,
                         "acceptance": float(sum(a ** i for i in range(1, k + 1))) / k,
                         "tokens_per_pass": tokens, "speedup": tokens * (c[0] + L * b[0] + h[0]) / round_cost})
    return rows


def _check_costs(costs) -> tuple:
    """(L, block, call, head) of a `measure_decode_costs` result; a sentence for anything else."""
    if not isinstance(costs, dict):
        raise ArgumentTypeError(f"costs must be the dict measure_decode_costs returns, got {type(costs).__name__}")
    missing = [k for k in ("num_layers", "block", "call", "head") if k not in costs]
    if missing:
        raise ValueError(f"costs lacks {missing}: pass what measure_decode_costs returns")
    L = whole_number(costs["num_layers"], "costs['num_layers']", low=2)
    parts = []
    for key in ("block", "call", "head"):
        part = tensor_arg(to_tensor(costs[key], f"costs[{key!r}]"), f"costs[{key!r}]", ndim=1, kind="real", finite=True,
                          what="seconds per number of new tokens (from measure_decode_costs)")
        if len(part) < 2 or bool((part < 0).any()):
            raise ValueError(f"costs[{key!r}] must hold at least 2 times >= 0 (q = 1 and 2 new tokens), got "
                             f"{part.tolist()}")
        parts.append(part.tolist())
    return (L, *parts)


def first_divergence(adapter, prompt, reference: torch.Tensor, candidate: torch.Tensor) -> dict | None:
    """Where two generations of the same prompt first differ, and the full model's logit gap there between
    the reference's token and the candidate's (a near-tie has a gap near 0). None when they are identical
    (over the shorter length)."""
    adapter = adapt(adapter)
    for name, ids in (("reference", reference), ("candidate", candidate)):
        tensor_arg(ids, name, ndim=1, kind="integer", nonempty=False, what="(n,) generated token ids (Generation.new_ids)")
    n = min(len(reference), len(candidate))
    differ = (reference[:n] != candidate[:n]).nonzero()
    if len(differ) == 0:
        return None
    i = int(differ[0, 0])
    ids = torch.cat([prompt_ids(adapter, prompt).cpu(), reference[None, :i]], dim=1).to(adapter.device)
    with torch.no_grad(), eval_mode(adapter.model):
        logits = adapter.logits({"input_ids": ids})[0, -1].double()
    ref, cand = int(reference[i]), int(candidate[i])
    return {"position": i, "reference_token": ref, "candidate_token": cand,
            "logit_gap": float(logits[ref] - logits[cand]), "top_logit": float(logits.max())}


def measure_speedup(adapter, prompts, *, exit_layer: int, draft_tokens: int, max_new_tokens: int = 32,
                    repeats: int = 3) -> dict:
    """Plain greedy vs self-speculative decoding on every prompt, timed back to back (alternating which goes
    first) `repeats` times; the speed-up is total plain time / total speculative time over prompts and
    repeats. Outputs are compared token for token (``identical``; ``divergences`` with their logit gaps).
    -> dict with speedup, plain/speculative tokens per second, acceptance_rate, tokens_per_pass, identical,
    divergences."""
    adapter = adapt(adapter)
    repeats = whole_number(repeats, "repeats", low=1)
    check_prompts(prompts)
    t_plain = t_spec = 0.0
    tokens = drafted = accepted = passes = 0
    divergences = []
    for i, prompt in enumerate(prompts):
        for r in range(repeats + (i == 0)):  # the very first pair warms up (allocations, kernels) and is not counted
            def plain():
                return greedy_generate(adapter, prompt, max_new_tokens=max_new_tokens, stop_at_eos=False)

            def spec():
                return self_speculative_generate(adapter, prompt, exit_layer=exit_layer, draft_tokens=draft_tokens,
                                                 max_new_tokens=max_new_tokens, stop_at_eos=False)
            first, second = (plain, spec) if r % 2 == 0 else (spec, plain)
            out = {first: first(), second: second()}
            p, s = out[plain], out[spec]
            if i == 0 and r == 0:
                continue
            t_plain += p.seconds
            t_spec += s.seconds
            if r == (i == 0):
                tokens += len(s.new_ids)
                drafted, accepted, passes = drafted + s.drafted, accepted + s.accepted, passes + s.verify_passes
                gap = first_divergence(adapter, prompt, p.new_ids, s.new_ids)
                if gap is not None:
                    divergences.append(gap)
    n_tokens = tokens * repeats
    return {"exit_layer": exit_layer, "draft_tokens": draft_tokens, "speedup": t_plain / t_spec,
            "plain_tokens_per_second": n_tokens / t_plain, "speculative_tokens_per_second": n_tokens / t_spec,
            "acceptance_rate": accepted / drafted if drafted else float("nan"),
            "tokens_per_pass": (tokens - len(prompts)) / passes if passes else float("nan"),
            "identical": not divergences, "divergences": divergences, "prompts": len(prompts),
            "new_tokens": tokens}
