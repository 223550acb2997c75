"""A causal LM run block by block with a key-value cache: the explicit loop that decoding builds on.

`DecoderSteps(adapter)` runs any contiguous range of blocks on any new positions, each block appending
those positions to its own layer of the cache, so that different layers may hold different lengths (the
first E layers run ahead while drafting; the rest catch up in one verify pass). Batch size 1, no padding.

    steps = DecoderSteps(adapter)                  # self-checked against the model's own logits
    cache = steps.new_cache()
    h = steps.embed(ids, start=0)                  # (1, T, d): positions 0..T-1
    h = steps.blocks(h, 1, L, cache, start=0)      # blocks 1..L; every layer's cache now holds T positions
    logits = steps.read(h, L)                      # (1, T, V): the shared head (final norm included)
    steps.keep(cache, T - 2)                       # every layer forgets the last two positions

What the family does before its blocks (embeddings, positions, the causal mask) is written out here for the
decoders of `layersim.models.families.BLOCK_ENTRY`: GPT-2 (learned positions), the Llama family (rotary
positions: Llama, SmolLM2, Mistral, Qwen2, Qwen3, Gemma, OLMo, Phi-3; a sliding window where every layer has
the same one) and GPT-NeoX / Pythia (rotary on part of each head). A
family not listed is refused with what to add. Whatever is listed is checked when the steps are made: a probe
sequence run in uneven pieces through uneven block ranges must give the model's own logits (`check`).

The same loop without a cache reads a padded batch (`entry`, then every block with the same arguments): that
is how `HFCausalLM.hidden_states` runs these families, checked by the adapter's self-check.
"""
from __future__ import annotations

import torch

from .base import eval_mode
from .families import BLOCK_ENTRY, attention_window, block_entry, per_layer_attention

# the decoder families written out (model_type -> "learned" or "rotary"; see families.BLOCK_ENTRY)
FAMILIES = {family: entry for family, entry in BLOCK_ENTRY.items() if entry in ("learned", "rotary", "neox")}


def run_block(block, h: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """One Hugging Face block on states h with the keyword arguments of an `entry` -> its output states."""
    out = block(h, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


class DecoderSteps:
    """Blocks of a causal LM (`HFCausalLM`) run in any ranges with a per-layer key-value cache.

    Shapes: ids (1, T) int64; hidden states (1, T, d); logits (1, T, V); `start` is the position of the first
    of the T tokens (how many positions the cache of the blocks being run already holds).
    """

    def __init__(self, adapter, *, check: bool = True):
        if not getattr(adapter, "vocabulary_readout", False):
            raise ValueError(f"{adapter.name} is not a causal language model: decoding needs one "
                             "(e.g. load_model('smollm2-135m'))")
        config = adapter.model.config
        family = getattr(config, "model_type", type(adapter.model).__name__)
        self.family_entry = FAMILIES.get(family)
        if self.family_entry is None:
            raise NotImplementedError(
                f"{adapter.name}: decoding block by block with a cache is written for {sorted(FAMILIES)}, not "
                f"{family!r}; add how its base model prepares the blocks' inputs to "
                "layersim.models.decoder.FAMILIES (the check then verifies it)")
        if per_layer_attention(config) or block_entry(config) is None:
            raise NotImplementedError(f"{adapter.name}: its layers use different attention windows, which one "
                                      "causal mask per call does not describe")
        self.window = attention_window(config)
        self.adapter, self.config, self.base = adapter, config, adapter.base
        self.layers = adapter.block_modules()
        self.num_layers = adapter.num_layers
        self.checked = False
        if check:
            self.check()

    # -- the cache
    def new_cache(self):
        """An empty key-value cache with one layer per block."""
        from transformers import DynamicCache

        return DynamicCache(config=self.config)

    @staticmethod
    def length(cache, layer: int) -> int:
        """How many positions block `layer` (1-based) has in the cache."""
        return cache.get_seq_length(layer - 1)

    def keep(self, cache, length: int, layers: range | None = None) -> None:
        """Keep the first `length` positions of the given blocks' caches (1-based; default every block)."""
        for layer in layers or range(1, self.num_layers + 1):
            cached = cache.layers[layer - 1]
            if getattr(cached, "keys", None) is not None and cached.keys.shape[-2] > length:
                cached.keys = cached.keys[..., :length, :]
                cached.values = cached.values[..., :length, :]

    # -- the loop
    def embed(self, ids: torch.Tensor, start: int, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) token ids at positions start..start+T-1 -> (B, T, d) the input of block 1 (GPT-2 adds the
        embeddings of `token_type_ids` where given, as its own forward does; the Llama family ignores them)."""
        if self.family_entry == "learned":
            positions = torch.arange(start, start + ids.shape[1], device=ids.device)[None]
            h = self.base.wte(ids) + self.base.wpe(positions)
            if token_type_ids is not None:
                h = h + self.base.wte(token_type_ids)
            return self.base.drop(h)
        if self.family_entry == "neox":
            return self.base.emb_dropout(self.base.embed_in(ids))
        return self.base.embed_tokens(ids)  # the Llama family ignores token_type_ids, as its own forward does

    def entry(self, h: torch.Tensor, start: int, cache=None, attention_mask=None, first: int = 1) -> dict:
        """What every block takes besides the states h (B, T, d) at positions start..start+T-1, as the model's own
        forward passes it: the causal mask (sliding-window where the model has one; padding from the (B, T)
        `attention_mask`), position ids, rotary embeddings, the cache (None: no cache, as in training)."""
        from transformers import masking_utils

        if cache is not None and self.window is not None and start + h.shape[1] >= self.window:
            raise NotImplementedError(f"{self.adapter.name}: {start + h.shape[1]} positions reach its sliding "
                                      f"attention window ({self.window}), past which its cache drops positions "
                                      "that this loop would crop again; decode shorter sequences")
        positions = torch.arange(start, start + h.shape[1], device=h.device)[None]
        make = (masking_utils.create_causal_mask if self.window is None
                else masking_utils.create_sliding_window_causal_mask)
        kwargs = {"attention_mask": make(config=self.config, inputs_embeds=h, attention_mask=attention_mask,
                                         cache=cache, position_ids=positions, layer_idx=first - 1),
                  "position_ids": positions, "layer_past" if self.family_entry == "neox" else "cache": cache,
                  "use_cache": cache is not None}
        if self.family_entry != "learned":
            kwargs["position_embeddings"] = self.base.rotary_emb(h, position_ids=positions)
        return kwargs

    def blocks(self, h: torch.Tensor, first: int, last: int, cache, start: int) -> torch.Tensor:
        """Blocks first..last (1-based, inclusive) on (1, T, d) states at positions start..start+T-1; each
        block's cache must hold exactly `start` positions before and holds start + T after. -> (1, T, d)."""
        for layer in (first, last):
            if self.length(cache, layer) != start:
                raise ValueError(f"block {layer}'s cache holds {self.length(cache, layer)} positions, but the new "
                                 f"tokens start at position {start}")
        kwargs = self.entry(h, start, cache, first=first)
        for block in self.layers[first - 1:last]:
            h = run_block(block, h, kwargs)
        return h

    def propagate(self, h: torch.Tensor, first: int, last: int, cache, start: int) -> None:
        """Give blocks first..last cache entries for positions start..start+T-1 without running them: their keys
        and values are computed from the states h (1, T, d) (after each block's own input norm, with its own
        key/value projections and positions), as if h were each block's input -- CALM's state propagation
        for the layers a token skipped. Only the key/value projections run."""
        positions = torch.arange(start, start + h.shape[1], device=h.device)[None]
        rotary = self.base.rotary_emb(h, position_ids=positions) if self.family_entry != "learned" else None
        for layer in range(first, last + 1):
            if self.length(cache, layer) != start:
                raise ValueError(f"block {layer}'s cache holds {self.length(cache, layer)} positions, but the new "
                                 f"tokens start at position {start}")
            keys, values = self._keys_values(self.layers[layer - 1], h, rotary)
            cache.update(keys, values, layer - 1)

    def _keys_values(self, block, h, rotary):
        """(1, heads, T, head_dim) keys and values that `block` would cache for input h."""
        if self.family_entry == "learned":
            attn = block.attn
            _, keys, values = attn.c_attn(block.ln_1(h)).split(attn.split_size, dim=2)
            shape = (*keys.shape[:-1], -1, attn.head_dim)
            return keys.view(shape).transpose(1, 2), values.view(shape).transpose(1, 2)
        import sys

        attn = block.attention if self.family_entry == "neox" else block.self_attn
        x = block.input_layernorm(h)
        head_dim = attn.head_size if self.family_entry == "neox" else attn.head_dim
        shape = (*x.shape[:-1], -1, head_dim)
        if self.family_entry == "neox":  # one projection, laid out per head as (query, key, value)
            _, keys, values = attn.query_key_value(x).view(*x.shape[:-1], -1, 3 * head_dim).chunk(3, dim=-1)
        elif hasattr(attn, "qkv_proj"):  # Phi-3: one projection, laid out as (queries, keys, values)
            q_size = self.config.num_attention_heads * head_dim
            k_size = attn.num_key_value_heads * head_dim
            qkv = attn.qkv_proj(x)
            keys, values = qkv[..., q_size:q_size + k_size].view(shape), qkv[..., q_size + k_size:].view(shape)
        else:
            keys, values = attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)
        if getattr(attn, "k_norm", None) is not None:  # Qwen3 normalises each head's keys
            keys = attn.k_norm(keys)
        keys = keys.transpose(1, 2)
        rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb  # the family's own rotary function
        keys = rotate(keys, keys, *rotary)[1]
        return keys, values.transpose(1, 2)

    def read(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """The shared head on (..., d) states of block `layer`: (..., V) logits (``adapter.reader``)."""
        return self.adapter.reader(h, layer)

    # -- the check
    def check(self) -> None:
        """A probe of 8 tokens (the adapter's probe batch, first row) run as 5 tokens through every block, then
        1 token through every block, then 2 tokens through blocks 1..E and L-E blocks after, must give the
        model's own logits at every position (E = L // 2). Raises `SelfCheckError` otherwise."""
        from .selfcheck import SelfCheckError, _close

        adapter = self.adapter
        ids = adapter.probe_batch()["input_ids"][:1].to(adapter.device)
        L, split = self.num_layers, max(1, self.num_layers // 2)
        with torch.no_grad(), eval_mode(adapter.model):
            want = adapter.model(input_ids=ids, use_cache=False).logits
            cache = self.new_cache()
            pieces = [self.blocks(self.embed(ids[:, :5], 0), 1, L, cache, 0),
                      self.blocks(self.embed(ids[:, 5:6], 5), 1, L, cache, 5)]
            early = self.blocks(self.embed(ids[:, 6:8], 6), 1, split, cache, 6)
            pieces.append(self.blocks(early, split + 1, L, cache, 6) if split < L else early)
            got = self.read(torch.cat(pieces, dim=1), L)
        ok, diff = _close(got, want, want.dtype)
        if ok:
            ok, diff = self._check_propagate(ids)
        self.checked = ok
        if not ok:
            raise SelfCheckError(
                f"{adapter.name}: running its blocks with a cache in pieces (or giving skipped blocks keys and values "
                f"from another state) differs from the model's own computation by up to {diff:.3g}; "
                "layersim.models.decoder does not know how this "
                f"{self.config.model_type} model prepares its blocks' inputs")


    def _check_propagate(self, ids) -> tuple[bool, float]:
        """`propagate` gives every block the keys and values that running the block on the same input caches."""
        from .selfcheck import _close

        ran, propagated = self.new_cache(), self.new_cache()
        h = self.embed(ids, 0)
        worst, ok = 0.0, True
        with torch.no_grad(), eval_mode(self.adapter.model):
            for layer in range(1, self.num_layers + 1):
                self.propagate(h, layer, layer, propagated, 0)
                h = self.blocks(h, layer, layer, ran, 0)
                for a, b in ((ran.layers[layer - 1].keys, propagated.layers[layer - 1].keys),
                             (ran.layers[layer - 1].values, propagated.layers[layer - 1].values)):
                    same, diff = _close(b, a, a.dtype)
                    ok, worst = ok and same, max(worst, diff)
        return ok, worst


def decoder_steps(adapter) -> DecoderSteps:
    """The `DecoderSteps` of a causal-LM adapter (or of a model / name that `layersim.models.adapt` accepts):
    the adapter's own (``adapter.steps``), checked with a cache once before its first use for decoding."""
    from .loading import adapt

    adapter = adapt(adapter)
    steps = getattr(adapter, "steps", None)
    if steps is None:  # not a causal LM, or a family not written out: refused with what to do
        steps = DecoderSteps(adapter, check=False)
    if not steps.checked:
        steps.check()
    return steps


__all__ = ["DecoderSteps", "decoder_steps", "run_block", "FAMILIES"]
