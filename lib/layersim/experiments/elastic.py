"""Elastic inference for language models (notebook 11): how often the first E layers' draft is accepted,
what self-speculative decoding is predicted to gain for every (E, k), and what it gains when measured.

>>> agreement = draft_agreement_on(run.adapter, test_sequences)           # (L,) teacher-forced
>>> table = speculation_table(run.adapter, prompts, agreement, exit_layers=[1, 2, 3], draft_tokens=[1, 2, 3])
"""
from __future__ import annotations

import contextlib
import time
import warnings

import pandas as pd
import torch

from ..early_exit import draft_agreement, measure_decode_costs, measure_speedup, predict_speedup
from ..progress import progress
from ..validate import whole_number


def draft_agreement_on(adapter, sequences: torch.Tensor, *, batch_size: int = 16, cache_dir=None) -> torch.Tensor:
    """(L,) the share of next-token predictions of every layer that equal the last layer's, teacher-forced
    on (n, T) token ids (e.g. a run's test split): the acceptance rate a greedy draft at layer E can expect."""
    from ..extract import extract
    from ..lm import token_batches

    out = extract(adapter, token_batches(sequences, batch_size), pooling="tokens", cache_dir=cache_dir)
    return draft_agreement(out)


def prompts_from(sequences: torch.Tensor, n: int, length: int) -> list:
    """The first `length` tokens of each of the first `n` sequences (n, T) -> a list of (1, length) prompts."""
    n = whole_number(n, "n", low=1, high=len(sequences))
    length = whole_number(length, "length", low=1, high=sequences.shape[1])
    return [sequences[i:i + 1, :length] for i in range(n)]


def speculation_table(adapter, prompts, agreement, *, exit_layers, draft_tokens, max_new_tokens: int = 32,
                      repeats: int = 3) -> pd.DataFrame:
    """One row per (E, k): the predicted acceptance, tokens per verify pass and speed-up (`predict_speedup`,
    from `agreement` and the decoding costs measured on this model) beside the measured ones
    (`measure_speedup`: plain greedy vs self-speculative decoding on `prompts`, outputs compared)."""
    draft_tokens = list(draft_tokens)
    context = int(prompts[0].shape[-1]) + max_new_tokens // 2
    costs = measure_decode_costs(adapter, max_draft=max(draft_tokens), context=context)
    predicted = predict_speedup(agreement, costs, exit_layers=exit_layers, draft_tokens=draft_tokens)
    rows = []
    for p in progress(predicted, desc=f"self-speculation {adapter.name}", total=len(predicted), unit="setting"):
        m = measure_speedup(adapter, prompts, exit_layer=p["exit_layer"], draft_tokens=p["draft_tokens"],
                            max_new_tokens=max_new_tokens, repeats=repeats)
        rows.append({"exit layer": p["exit_layer"], "drafts k": p["draft_tokens"],
                     "agreement (teacher-forced)": p["agreement"], "acceptance (predicted)": p["acceptance"], "acceptance (measured)": m["acceptance_rate"],
                     "tokens/pass (predicted)": p["tokens_per_pass"], "tokens/pass (measured)": m["tokens_per_pass"],
                     "speed-up (predicted)": p["speedup"], "speed-up (measured)": m["speedup"],
                     "plain tokens/s": m["plain_tokens_per_second"],
                     "identical": m["identical"], "largest |logit gap| at a divergence":
                         max((abs(d["logit_gap"]) for d in m["divergences"]), default=0.0)})
    return pd.DataFrame(rows)


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' advice about generation arguments (printed on every generate call) silenced for a while."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


@contextlib.contextmanager
def _config_kept(model):
    """The model's config as it was, whatever happens inside: transformers' assistant_early_exit sets the
    number of layers to E for the assistant and, when it fails (GPT-2), leaves the model with E layers."""
    before = model.config.to_dict()
    try:
        yield
    finally:
        after = model.config.to_dict()
        for key, value in before.items():
            if after.get(key) != value:
                setattr(model.config, key, value)


def transformers_early_exit_speedup(adapter, prompts, *, exit_layer: int, draft_tokens: int,
                                    max_new_tokens: int = 32, repeats: int = 3) -> dict:
    """The peer baseline: `transformers`' ``generate(assistant_early_exit=E)`` (the first E layers draft, with
    their own cache) against its plain greedy ``generate``, timed back to back. -> dict with speedup, identical,
    or ``error`` where transformers cannot do it for this model (GPT-2 raises inside transformers)."""
    model = adapter.model
    plain_s = early_s = 0.0
    identical = True
    for prompt in prompts:
        ids = prompt.to(adapter.device)
        common = dict(attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                      do_sample=False, pad_token_id=0)
        for r in range(repeats):
            with warnings.catch_warnings(), _quiet_transformers():
                warnings.simplefilter("ignore")
                runs = [("plain", {}), ("early", {"assistant_early_exit": exit_layer,
                                                  "num_assistant_tokens": draft_tokens,
                                                  "num_assistant_tokens_schedule": "constant"})]
                outs = {}
                for name, extra in (runs if r % 2 == 0 else runs[::-1]):
                    start = time.perf_counter()
                    try:
                        with torch.no_grad(), _config_kept(model):
                            outs[name] = model.generate(ids, **common, **extra)
                    except Exception as e:  # transformers' own limitation, reported as the result
                        return {"exit_layer": exit_layer, "draft_tokens": draft_tokens,
                                "error": f"{type(e).__name__}: {e}"}
                    elapsed = time.perf_counter() - start
                    plain_s, early_s = (plain_s + elapsed, early_s) if name == "plain" else (plain_s, early_s + elapsed)
            identical &= torch.equal(outs["plain"], outs["early"])
    return {"exit_layer": exit_layer, "draft_tokens": draft_tokens, "speedup": plain_s / early_s,
            "identical": identical}
