"""Adapters for Hugging Face text models: encoders (BERT family, pre-norm encoders, ModernBERT) and causal LMs.

Blocks are run by an explicit loop where layersim knows what the family does before block 1
(`families.BLOCK_ENTRY`: GPT-2, the Llama family, the BERT family): the embeddings and the blocks' arguments are
made as the model's own forward makes them, then the blocks run one by one up to `upto`. Every other family is
read through the model's own forward (`layersim.models.hf_blocks`: hooks on the blocks, the forward stopped
after block `upto`). Where the blocks are and what follows them comes from `layersim.models.families`; the
self-check verifies both paths against the model's own forward and logits.

The caller's tokenizer is never changed: texts are tokenised without padding and padded here, on the right.
"""
from __future__ import annotations

import json

import torch
import torch.nn as nn

from ..storage import stable_hash
from .base import BlockState, Hidden, LayerAdapter
from .decoder import DecoderSteps
from .families import (block_entry, find_encoder_head, find_final_norm, find_projection, logit_rescaling,
                       logit_softcap, per_layer_attention)
from .hf_blocks import HFBlocks
from ..validate import whole_number


class _HFText(HFBlocks, LayerAdapter):
    """Tokenisation and block reading shared by the Hugging Face adapters. A batch is a list of strings, a list
    of text pairs, or a dict of tensors (``input_ids``, ``attention_mask``, e.g. a tokenizer's output)."""

    modality = "text"

    def __init__(self, model, tokenizer, *, name=None, final_norm=True, max_length=128):
        super().__init__(model, name=name or getattr(model.config, "_name_or_path", None) or type(model).__name__,
                         final_norm=final_norm)
        self.tokenizer = tokenizer
        self.max_length = whole_number(max_length, "max_length", low=2, what="an integer >= 2 (tokens)")
        self.num_layers = model.config.num_hidden_layers
        self.width = model.config.hidden_size
        self._find_blocks(self._base_module(model))

    def _base_module(self, model) -> nn.Module:
        """The module whose forward runs the blocks (the base model; an encoder stack reads its encoder)."""
        return model.base_model

    def settings(self) -> dict:
        tok = self.tokenizer
        vocab = tokenizer_fingerprint(tok) if tok is not None and hasattr(tok, "backend_tokenizer") else ""
        return {**super().settings(), "max_length": self.max_length, "tokenizer": type(tok).__name__,
                "vocab": vocab, "model_class": type(self.model).__name__}

    def structure(self) -> dict:
        return {**super().structure(), "family": self.model.config.model_type,
                **self.block_structure()}

    # -- inputs
    def _pad_id(self) -> int:
        tok = self.tokenizer
        for value in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
            if isinstance(value, int):
                return value
        return 0  # padding is masked out: any id will do

    def encode(self, batch) -> dict:
        """Texts -> dict of (B, T) tensors on the model's device: input_ids, attention_mask (and
        token_type_ids when the tokenizer makes them, as ``model(**tokenizer(texts))`` would use them).

        batch: a list of strings, a list of (text, text) pairs (e.g. GLUE sentence pairs), or a dict with
        input_ids (and attention_mask, token_type_ids). Texts are right-padded and truncated to max_length.
        """
        if isinstance(batch, str):
            raise ValueError("expected a list of strings, got a single string; wrap it in a list")
        is_list = isinstance(batch, (list, tuple)) and len(batch) > 0
        if is_list and (all(isinstance(s, str) for s in batch) or all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in batch)):
            if self.tokenizer is None:
                raise ValueError(f"{self.name} was given texts but has no tokenizer; pass tokenizer=... to adapt()")
            enc = self._tokenize(batch)
        elif hasattr(batch, "keys") and "input_ids" in batch:
            enc = {k: torch.as_tensor(v) for k, v in batch.items()}
        elif is_list:
            bad = next((i, s) for i, s in enumerate(batch) if not isinstance(s, str))
            raise ValueError(f"{self.name} reads text: every item must be a string (or every item a pair of "
                             f"strings), but item {bad[0]} is {type(bad[1]).__name__} ({bad[1]!r:.40})")
        else:
            what = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"{self.name} reads text: expected a non-empty list of strings (or of text pairs) or "
                             f"a dict with 'input_ids', got {what}")
        ids = enc["input_ids"]
        if ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, tokens), got {tuple(ids.shape)}")
        if ids.shape[1] > self.max_positions:
            raise ValueError(f"sequences of {ids.shape[1]} tokens exceed the context of {self.name} "
                             f"({self.max_positions} positions); truncate or split them")
        vocab = getattr(self.model.config, "vocab_size", None)
        if vocab is not None and ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"token ids must lie in [0, {vocab}) for {self.name}, got ids up to {int(ids.max())}: "
                             "was the text tokenised with another tokenizer than the model's?")
        enc.setdefault("attention_mask", torch.ones_like(ids))
        for name in ("attention_mask", "token_type_ids"):
            if name in enc and enc[name].shape != ids.shape:
                raise ValueError(f"{name} {tuple(enc[name].shape)} does not match input_ids {tuple(ids.shape)}")
        keep = ("input_ids", "attention_mask", "token_type_ids")
        return {k: v.to(self.device) for k, v in enc.items() if k in keep}

    def _tokenize(self, batch) -> dict:
        """Tokenise without padding (the caller's tokenizer keeps its settings), then pad on the right."""
        pairs = not isinstance(batch[0], str)
        first = [p[0] for p in batch] if pairs else list(batch)
        second = [p[1] for p in batch] if pairs else None
        rows = self.tokenizer(first, second, padding=False, truncation=True, max_length=self.max_length)
        width = max(len(ids) for ids in rows["input_ids"])
        pad = {"input_ids": self._pad_id(), "attention_mask": 0, "token_type_ids": 0}
        return {k: torch.tensor([list(r) + [pad[k]] * (width - len(r)) for r in rows[k]])
                for k in pad if k in rows}

    @property
    def max_positions(self) -> int:
        config = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "max_seq_len"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2 ** 31

    def probe_batch(self) -> dict:
        """Two rows of 8 random token ids, the second padded after 5 (own generator: global RNG untouched)."""
        vocab = min(int(getattr(self.model.config, "vocab_size", 100) or 100), 1000)
        ids = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)
        mask[1, 5:] = 0
        return {"input_ids": ids, "attention_mask": mask}

    def run_model(self, batch):
        return self.model(**self.encode(batch), **self.call_kwargs)

    # -- blocks
    def _model_inputs(self, batch) -> dict:
        return self.encode(batch)

    def blocks_run_by(self) -> str:
        if self.has_entry:
            return (f"layersim's explicit loop (embeddings and block arguments written out for "
                    f"{block_entry(self.model.config)!r} families)")
        return super().blocks_run_by()

    def begin(self, batch) -> BlockState:
        if per_layer_attention(self.model.config):
            raise NotImplementedError(f"{self.name}: its blocks take different attention masks (sliding windows), "
                                      "so it cannot be stepped block by block with one set of arguments")
        return super().begin(batch)


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of a tokenizer's vocabulary and rules: equal for tokenizers that encode alike. The padding and
    truncation state (set by the last call, not part of the vocabulary) is left out."""
    if hasattr(tokenizer, "backend_tokenizer"):
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        for state in ("padding", "truncation"):
            spec.pop(state, None)
        return stable_hash(spec)
    return stable_hash({"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items())})


class HFEncoder(_HFText):
    """Adapter for Hugging Face encoders, bare or *ForSequenceClassification: the BERT family (post-norm: no
    final norm; the head reads [CLS]: BERT ``classifier(pooler(h_l[CLS]))``), pre-norm encoders whose final
    norm normalises the sequence before the head (RoBERTa-PreLayerNorm, XLM-RoBERTa-XL, ModernBERT) and
    ModernBERT's head on the [CLS] or mean-pooled normed tokens."""

    settable_readout_poolings = ("cls", "mean")

    def __init__(self, model, tokenizer=None, *, name=None, final_norm: bool = True, max_length: int = 128,
                 readout_pooling: str | None = None):
        super().__init__(model, tokenizer, name=name, final_norm=final_norm, max_length=max_length)
        self._sequence_head, self.head_formula, own_pooling = find_encoder_head(model)
        if self._sequence_head is None and self.head_formula is not None:
            raise ValueError(f"don't know how {type(model).__name__} turns hidden states into logits "
                             f"({self.head_formula}); write a LayerAdapter subclass for it")
        self.num_classes = model.config.num_labels if self._sequence_head is not None else None
        self.norm_path, self.norm_module = find_final_norm(self.base, encoder=True)
        self.has_final_norm = self.norm_module is not None
        self.norm_before_pool = self.has_final_norm  # the model normalises the whole sequence, then its head pools
        self.own_pooling = own_pooling or "cls"
        self.readout_pooling = self.own_pooling
        if readout_pooling is not None:
            self.set_readout_pooling(readout_pooling, check=False)

    @property
    def has_entry(self) -> bool:
        return block_entry(self.model.config) == "bert" and self._blocks is not None

    def _entry(self, enc: dict) -> tuple[torch.Tensor, dict]:
        """The BERT family: embeddings (ELECTRA's projection after them), then a bidirectional padding mask."""
        from transformers.masking_utils import create_bidirectional_mask

        h = self.base.embeddings(input_ids=enc["input_ids"], token_type_ids=enc.get("token_type_ids"))
        if hasattr(self.base, "embeddings_project"):
            h = self.base.embeddings_project(h)
        mask = create_bidirectional_mask(config=self.base.config, inputs_embeds=h, attention_mask=enc["attention_mask"])
        return h, {"attention_mask": mask}

    def settings(self) -> dict:
        out = super().settings()
        out.pop("readout_pooling", None)
        if self.readout_pooling != self.own_pooling:
            out["readout_pooling"] = self.readout_pooling
        return out

    def readout_formula(self) -> str:
        formula = self.head_formula or "no head"
        if self.readout_pooling != self.own_pooling:
            formula += f", reading the {self.readout_pooling}-pooled h_l"
        if self.has_final_norm:
            return formula + f" after the final norm {self.norm_path} (pre-norm encoder)" + (
                "" if self.final_norm else "; final norm skipped for l < L")
        return formula + " (post-norm encoder: no final norm)"

    def norm(self, h):
        return self.norm_module(h) if self.norm_module is not None else h

    def logits(self, batch) -> torch.Tensor:
        """The model's prediction (B, C): its own forward, or with a switched readout pooling the head on
        that pooling of the last layer."""
        self._require_readout()
        if self.readout_pooling == self.own_pooling:
            return self.model(**self.encode(batch)).logits
        hidden = self.hidden_states(batch)
        return self.reader(self.head_inputs(hidden, layers=[self.num_layers])[0], self.num_layers)

    def classifier_module(self):
        return getattr(self.model, "classifier", None)

    def _head(self, normed):
        logits = self._sequence_head(normed)
        if logits.shape != (normed.shape[0], self.num_classes):
            raise ValueError(f"the head of {type(self.model).__name__} ({self.head_formula}) gave shape "
                             f"{tuple(logits.shape)}, not (batch, {self.num_classes}): this model family is not "
                             "supported; write a LayerAdapter subclass for it")
        return logits


class HFCausalLM(_HFText):
    """Adapter for Hugging Face causal LMs (GPT-2, Llama-style incl. SmolLM2, GPT-NeoX, OPT, MPT, Gemma-2, ...).

    Every token position is a sample (pooling "tokens", the readout pooling); its target is the next token.
    Readout of layer l: ``lm_head(norm(h_l))`` with the model's final norm (``ln_f`` for GPT-2, ``norm`` for
    Llama, ...; OPT's ``project_out`` after it where it has one; Gemma-2's soft-capping of the logits,
    ``cap * tanh(logits / cap)``, after lm_head) when ``final_norm=True`` (default);
    ``lm_head(h_l)`` for l < L when False, as the authors' GPT-2 code (layer L is always the model's own
    prediction). `norm=` names the final norm where the lookup does not find it.
    """

    has_class_token = False
    readout_pooling = "tokens"
    vocabulary_readout = True
    call_kwargs = {"use_cache": False}

    def __init__(self, model, tokenizer=None, *, name=None, final_norm: bool = True, max_length: int = 256,
                 norm: nn.Module | None = None):
        super().__init__(model, tokenizer, name=name, final_norm=final_norm, max_length=max_length)
        if norm is None:
            self.norm_path, norm = find_final_norm(self.base, encoder=False)
        else:
            self.norm_path = "norm (given)"
        self.norm_module = norm
        self.has_final_norm = norm is not None
        self.projection_path, self.projection = find_projection(self.base)
        self.head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if self.head is None:
            raise ValueError(f"{type(model).__name__} has no language-model head (get_output_embeddings() is "
                             "None); load it with AutoModelForCausalLM, not AutoModel")
        rescaling = logit_rescaling(model.config)
        if rescaling is not None:
            raise ValueError(f"{type(model).__name__} rescales its logits after lm_head ({rescaling}), which layersim "
                             "does not reproduce yet: add that step to HFCausalLM._head (as Gemma-2's soft-capping "
                             "is), or write a LayerAdapter subclass")
        self.softcap = logit_softcap(model.config)  # Gemma-2: the head ends in cap * tanh(logits / cap)
        self.num_classes = self.head.out_features
        entry = block_entry(model.config) in ("learned", "rotary", "neox") and self._blocks is not None
        self.steps = DecoderSteps(self, check=False) if entry else None  # checked by the self-check, and by
        # `decoder_steps` before decoding with a cache
        if tokenizer is not None and len(tokenizer) > self.num_classes:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but {self.name} reads out only "
                             f"{self.num_classes}: they do not belong together")

    @property
    def poolings(self) -> tuple:
        return ("mean", "last", "tokens")

    @property
    def readout_poolings(self) -> tuple:
        return ("tokens", "last")

    def head_pooling(self, pooling: str) -> str:
        return pooling  # the LM head reads each token that is a sample

    def check_pooling(self, pooling: str) -> None:
        from .base import check_pooling

        check_pooling(pooling)
        if pooling == "cls":
            raise ValueError("a causal language model has no CLS token (its first token sees only itself); "
                             "use pooling='last', 'mean' or 'tokens'")

    def check_readout_pooling(self, pooling: str) -> None:
        self.check_pooling(pooling)
        if pooling not in self.readout_poolings:
            raise ValueError("a language model reads out one token at a time: use pooling='tokens' or 'last' "
                             "with readout, or readout=False")

    def readout_formula(self) -> str:
        head = f"lm_head({self.projection_path}(·))" if self.projection is not None else "lm_head(·)"
        if self.softcap is not None:
            head = f"{self.softcap:g} * tanh({head} / {self.softcap:g})"
        if not self.has_final_norm:
            return head.replace("·", "h_l") + " (no final norm)"
        normed = head.replace("·", f"{self.norm_path}(h_l)")
        if self.final_norm:
            return normed
        return (f"{head.replace('·', 'h_l')} ({self.norm_path} skipped) for l < L, "
                f"{normed.replace('h_l', 'h_L')} for l = L")

    def structure(self) -> dict:
        return {**super().structure(), "final norm at": self.norm_path, "head": "lm_head"
                + (f" after {self.projection_path}" if self.projection is not None else "")
                + (f", logits soft-capped at {self.softcap:g}" if self.softcap is not None else "")}

    def sample_mask(self, hidden: Hidden, pooling: str) -> torch.Tensor:
        """(B, T) bool: real positions whose next position is real too (each has a next-token target)."""
        mask = hidden.mask
        return torch.cat([mask[:, :-1] & mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)

    def next_tokens(self, hidden: Hidden) -> torch.Tensor:
        """(n_tokens,) the target (next token) of every sample of pooling='tokens', in the same order."""
        targets = torch.cat([hidden.input_ids[:, 1:], hidden.input_ids[:, :1]], dim=1)
        return targets[self.sample_mask(hidden, "tokens")]

    def targets(self, hidden: Hidden, labels=None, pooling: str | None = None) -> torch.Tensor | None:
        """The next token of every sample for pooling 'tokens' (the default); None for other poolings,
        whose next token is unknown. `labels` are ignored: the text is its own target."""
        return self.next_tokens(hidden) if (pooling or self.readout_pooling) == "tokens" else None

    def logits(self, batch) -> torch.Tensor:
        """(B, T, V): the model's own next-token logits at every position."""
        return self.model(**self.encode(batch), use_cache=False).logits

    def norm(self, h):
        return self.norm_module(h) if self.norm_module is not None else h

    @property
    def has_entry(self) -> bool:
        return self.steps is not None

    def _entry(self, enc: dict) -> tuple[torch.Tensor, dict]:
        """Token (and GPT-2's position) embeddings, then the causal mask with the padding and, for the Llama
        family, the rotary embeddings (`DecoderSteps.embed`, `DecoderSteps.entry`, without a cache)."""
        h = self.steps.embed(enc["input_ids"], 0, enc.get("token_type_ids"))
        return h, self.steps.entry(h, 0, attention_mask=enc["attention_mask"])

    def begin(self, batch) -> BlockState:
        raise NotImplementedError(f"{self.name} is a causal LM: it is not stepped block by block (per-sample "
                                  "exits); for a fixed exit layer use hidden_states(batch, upto=l)")

    def head_linear(self):
        """lm_head, where the head ends in it; None after soft-capping (the head's last step is not linear, so a
        loss cannot fuse it: `layersim.losses` forms its logits instead)."""
        return self.head if isinstance(self.head, nn.Linear) and self.softcap is None else None

    def classifier_module(self):
        return self.head

    def _pre_linear(self, normed):
        return self.projection(normed) if self.projection is not None else normed

    def _head(self, normed):
        logits = self.head(self._pre_linear(normed))
        if self.softcap is None:
            return logits
        return torch.tanh(logits / self.softcap) * self.softcap  # as the model's forward
