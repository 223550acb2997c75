"""Self-speculative decoding: the first E layers draft, the whole model verifies, the output is the model's.

One aligned model serves every depth (PAPER.md); for a language model that promise is cashed in by
drafting tokens with layers 1..E read by the shared head (final norm included) and verifying them with the
remaining layers in one pass, as LayerSkip does (Elhoushi et al., ACL 2024):

1. draft: the pending token runs through blocks 1..E, the shared head reads block E, its choice is the next
   draft token; k times (each draft token is fed back);
2. verify: blocks E+1..L run once on the k+1 new positions, starting from their block-E states (the draft's
   cache of blocks 1..E is reused: nothing runs twice); the model's own head reads block L;
3. accept the longest prefix of drafts that the full model agrees with, plus the full model's own next
   token, and drop the rejected positions from every layer's cache.

Greedy: the output equals the model's greedy decoding token for token (up to float rounding, which can only
matter at a near-tie). Sampling (``temperature`` > 0): speculative sampling's rejection rule (accept draft d
with probability min(1, p(d) / q(d)), else draw from max(0, p - q) normalised) keeps the full model's
distribution exactly. Batch size 1: a batch would need per-row accepted lengths, hence per-row cache
lengths and padding-aware masks, which `DecoderSteps` does not do.

>>> out = self_speculative_generate(adapter, "The film was", exit_layer=6, draft_tokens=3, max_new_tokens=48)
>>> out.text, out.acceptance_rate, out.tokens_per_pass
>>> plain = greedy_generate(adapter, "The film was", max_new_tokens=48)     # the same cache, no drafting
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from layersim.models import adapt, eval_mode
from layersim.models.decoder import decoder_steps
from layersim.validate import ArgumentTypeError, describe, real_number, to_tensor, whole_number

__all__ = ["Generation", "greedy_generate", "self_speculative_generate", "prompt_ids"]


@dataclass
class Generation:
    """What a decoding call produced: ``ids`` (1, T + n) prompt and new tokens, ``new_ids`` (n,), ``text``
    (with a tokenizer), ``seconds`` (decoding only, tokenisation excluded); for self-speculation the exit
    layer, drafts per pass, how many tokens were drafted and accepted, and the verify passes; for per-token
    exits the layer each new token left at (``exit_layers``; the first token, from the prompt's pass, is L)."""

    ids: torch.Tensor
    new_ids: torch.Tensor
    seconds: float
    text: str | None = None
    exit_layer: int | None = None
    draft_tokens: int | None = None
    drafted: int = 0
    accepted: int = 0
    verify_passes: int = 0
    accepted_per_pass: list = field(default_factory=list)
    exit_layers: list = field(default_factory=list)  # per-token exits (`confidence_generate`)

    @property
    def acceptance_rate(self) -> float:
        """Accepted drafts / drafted tokens (NaN when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else float("nan")

    @property
    def tokens_per_pass(self) -> float:
        """New tokens per verify pass of the full model (plain decoding: 1); the first token, which the
        prompt's pass produces, is not counted."""
        return (len(self.new_ids) - 1) / self.verify_passes if self.verify_passes else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return len(self.new_ids) / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> dict:
        return {"new_tokens": len(self.new_ids), "seconds": self.seconds, "tokens_per_second": self.tokens_per_second,
                "exit_layer": self.exit_layer, "draft_tokens": self.draft_tokens, "drafted": self.drafted,
                "accepted": self.accepted, "acceptance_rate": self.acceptance_rate,
                "verify_passes": self.verify_passes, "tokens_per_pass": self.tokens_per_pass}


def prompt_ids(adapter, prompt) -> torch.Tensor:
    """A prompt (a string, which needs the adapter's tokenizer, or token ids (T,) / (1, T)) -> (1, T) int64
    ids on the adapter's device."""
    tokenizer = getattr(adapter, "tokenizer", None)
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError(f"{adapter.name} has no tokenizer: pass the prompt as a (1, T) tensor of token ids")
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    elif isinstance(prompt, (torch.Tensor, list, tuple)):
        ids = to_tensor(prompt, "prompt")
        if ids.dim() == 1:
            ids = ids[None]
    else:
        raise ArgumentTypeError(f"prompt must be a string or a (1, T) integer tensor of token ids, got {describe(prompt)}")
    if ids.dim() != 2 or ids.shape[0] != 1 or ids.shape[1] < 1 or ids.is_floating_point() or ids.is_complex() \
            or ids.dtype == torch.bool:
        raise ValueError(f"prompt must be a non-empty string or a (1, T) integer tensor of token ids (batch size 1), "
                         f"got shape {tuple(ids.shape)}")
    vocab = adapter.num_classes
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ValueError(f"prompt token ids must lie in [0, {vocab}) for {adapter.name}, got up to {int(ids.max())}")
    return ids.long().to(adapter.device)


def check_prompts(prompts) -> None:
    """A non-empty list of prompts (strings or (1, T) token ids); a sentence otherwise."""
    if isinstance(prompts, (str, bytes, torch.Tensor)) or not isinstance(prompts, (list, tuple)):
        raise ArgumentTypeError(f"prompts must be a list of prompts (strings or (1, T) token ids), got "
                                f"{type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of prompts (strings or (1, T) token ids)")


def _start(adapter, prompt, max_new_tokens, stop_at_eos):
    adapter = adapt(adapter)
    steps = decoder_steps(adapter)
    ids = prompt_ids(adapter, prompt)
    max_new_tokens = whole_number(max_new_tokens, "max_new_tokens", low=1)
    context = adapter.max_positions
    if ids.shape[1] + max_new_tokens > context:
        raise ValueError(f"a prompt of {ids.shape[1]} tokens plus max_new_tokens={max_new_tokens} exceeds the "
                         f"context of {adapter.name} ({context} positions); shorten the prompt or generate less")
    tokenizer = getattr(adapter, "tokenizer", None)
    eos = getattr(tokenizer, "eos_token_id", None)
    eos = eos if eos is not None else getattr(adapter.model.config, "eos_token_id", None)
    return adapter, steps, ids, max_new_tokens, (eos if stop_at_eos and isinstance(eos, int) else None)


def _pick(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
    """(V,) logits -> a () token: the argmax (temperature 0) or a draw from softmax(logits / temperature)."""
    if temperature == 0:
        return logits.argmax(-1)
    return torch.multinomial(torch.softmax(logits.double() / temperature, -1), 1, generator=generator)[0]


def _prefill(steps, ids, temperature: float = 0.0, generator=None) -> tuple:
    """The prompt through every block into a new cache -> (cache, the first new token from layer L)."""
    L = steps.num_layers
    cache = steps.new_cache()
    h = steps.blocks(steps.embed(ids, 0), 1, L, cache, 0)
    return cache, int(_pick(steps.read(h[0, -1], L), temperature, generator))


def _finish(adapter, ids, new, seconds, eos, max_new_tokens, **stats) -> Generation:
    new = new[:max_new_tokens]
    if eos is not None and eos in new:
        new = new[:new.index(eos) + 1]
    new_ids = torch.tensor(new, dtype=torch.long)
    tokenizer = getattr(adapter, "tokenizer", None)
    text = tokenizer.decode(new_ids) if tokenizer is not None else None
    return Generation(torch.cat([ids.cpu(), new_ids[None]], dim=1), new_ids, seconds, text, **stats)


def greedy_generate(adapter, prompt, *, max_new_tokens: int = 20, stop_at_eos: bool = True,
                    temperature: float = 0.0, generator: torch.Generator | None = None) -> Generation:
    """Plain decoding with a key-value cache, one token per pass of the whole model (the baseline that
    self-speculation is timed against: the same cache, the same block loop). temperature > 0 samples."""
    adapter, steps, ids, max_new_tokens, eos = _start(adapter, prompt, max_new_tokens, stop_at_eos)
    temperature = real_number(temperature, "temperature", low=0.0)
    L = adapter.num_layers
    with torch.no_grad(), eval_mode(adapter.model):
        begin = time.perf_counter()
        cache, first = _prefill(steps, ids, temperature, generator)
        new = [first]
        while len(new) < max_new_tokens and new[-1] != eos:
            pos = ids.shape[1] + len(new) - 1
            token = torch.tensor([[new[-1]]], device=ids.device)
            h = steps.blocks(steps.embed(token, pos), 1, L, cache, pos)
            new.append(int(_pick(steps.read(h[0, -1], L), temperature, generator)))
        seconds = time.perf_counter() - begin
    return _finish(adapter, ids, new, seconds, eos, max_new_tokens, verify_passes=len(new) - 1)


def _accept_sampled(drafts, q, p, generator):
    """Speculative sampling: drafts (k,) drawn from q (k, V); p (k+1, V) the full model's distributions.
    -> (accepted count a, the next token): a draft d_i is kept with probability min(1, p_i(d_i) / q_i(d_i));
    at the first rejection the next token is drawn from max(0, p_i - q_i) normalised, else from p_k."""
    for i, d in enumerate(drafts):
        u = torch.rand((), generator=generator, dtype=torch.float64)
        if u * q[i, d] < p[i, d]:  # u < p/q without dividing by a zero q
            continue
        residual = (p[i] - q[i]).clamp_min(0)
        total = residual.sum()
        dist = residual / total if total > 0 else p[i]
        return i, int(torch.multinomial(dist, 1, generator=generator)[0])
    return len(drafts), int(torch.multinomial(p[len(drafts)], 1, generator=generator)[0])


def self_speculative_generate(adapter, prompt, *, exit_layer: int, draft_tokens: int = 3,
                              max_new_tokens: int = 20, stop_at_eos: bool = True, temperature: float = 0.0,
                              generator: torch.Generator | None = None) -> Generation:
    """Decode with layers 1..`exit_layer` drafting `draft_tokens` tokens per pass and the whole model
    verifying them (see the module's docstring). temperature 0: greedy, the output equals `greedy_generate`'s;
    temperature > 0: speculative sampling from the full model's softmax(logits / temperature), with
    `generator` for the draws. prompt: a string or (1, T) token ids. -> `Generation` with the statistics."""
    adapter, steps, ids, max_new_tokens, eos = _start(adapter, prompt, max_new_tokens, stop_at_eos)
    L = adapter.num_layers
    if L < 2:
        raise ValueError(f"{adapter.name} has one layer: there is no shallower exit to draft with")
    E = whole_number(exit_layer, "exit_layer", low=1, high=L - 1,
                     what=f"an integer in 1..{L - 1} (the draft reads block E; block L is the model itself)")
    k = whole_number(draft_tokens, "draft_tokens", low=1)
    temperature = real_number(temperature, "temperature", low=0.0)
    stats = {"exit_layer": E, "draft_tokens": k, "drafted": 0, "accepted": 0, "verify_passes": 0,
             "accepted_per_pass": []}
    with torch.no_grad(), eval_mode(adapter.model):
        begin = time.perf_counter()
        cache, first = _prefill(steps, ids, temperature, generator)
        new = [first]
        while len(new) < max_new_tokens and new[-1] != eos:
            pos = ids.shape[1] + len(new) - 1  # the pending token's position
            budget = min(k, max_new_tokens - len(new) - 1)
            token, drafts, draft_probs, states = new[-1], [], [], []
            for i in range(budget + 1):  # feed the pending token and each draft through blocks 1..E
                x = torch.tensor([[token]], device=ids.device)
                states.append(steps.blocks(steps.embed(x, pos + i), 1, E, cache, pos + i))
                if i == budget or token == eos and i > 0:
                    break
                logits = steps.read(states[-1][0, -1], E)
                token = int(_pick(logits, temperature, generator))
                drafts.append(token)
                if temperature > 0:
                    draft_probs.append(torch.softmax(logits.double() / temperature, -1))
            full = steps.read(steps.blocks(torch.cat(states, dim=1), E + 1, L, cache, pos), L)[0]  # (n+1, V)
            if temperature == 0:
                verdict = full.argmax(-1).tolist()
                a = 0
                while a < len(drafts) and drafts[a] == verdict[a]:
                    a += 1
                following = verdict[a]
            else:
                p = torch.softmax(full.double() / temperature, -1)
                a, following = _accept_sampled(drafts, torch.stack(draft_probs) if drafts else None, p, generator)
            steps.keep(cache, pos + a + 1)
            new += drafts[:a] + [following]
            stats["drafted"] += len(drafts)
            stats["accepted"] += a
            stats["verify_passes"] += 1
            stats["accepted_per_pass"].append(a)
        seconds = time.perf_counter() - begin
    return _finish(adapter, ids, new, seconds, eos, max_new_tokens, **stats)
