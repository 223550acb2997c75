"""One interface over the transformers the paper studies: the output of every block, and the model's own
last-layer classifier applied to each of them.

Every adapter has
- ``num_layers`` (L), ``width`` (d), ``num_classes`` (C: classes, or the vocabulary of a language model;
  ``None`` when the model has no head), ``kind`` ("vision", "encoder" or "causal-lm"), ``final_norm``;
- ``hidden_states(batch) -> Hidden``: the tokens after blocks 1..L, (L, B, T, d), and the padding mask;
- ``layers(batch, pooling, layers=None) -> (L', n, d)``: one vector per sample and layer;
- ``readout(hidden, layers=None)``: the last-layer classifier on every layer, (L', B, C) for a
  classifier, (L', B, T, V) for a language model (there ``readout_vectors`` reads any (..., d) stack);
- ``logits(batch)``: the model's own output, for checking that the readout of layer L reproduces it.

Pooling (the token choice) is always explicit:
- "cls": the first token (ViT/DeiT class token, BERT [CLS]); not defined for causal LMs;
- "mean": the mean over real tokens (text: every non-padding token incl. [CLS]/[SEP], as
  sentence-transformers do; vision: the patch tokens, without CLS/distillation/register tokens);
- "last": the last non-padding token (the natural summary of a causal LM);
- "tokens": every non-padding position is one sample, (L, n_tokens, d). For a causal LM the last
  position of each sequence is left out, so that every sample has a target: the next token.

Readout of a hidden layer (PAPER.md): head(norm(h_l)). For pre-norm models (ViT/DeiT, GPT-2, Llama)
``norm`` is the model's final norm (``norm``, ``ln_f``), applied per layer when ``final_norm=True``
(the default, as the model itself does after block L). The authors' GPT-2 code skipped ln_f on hidden
layers: ``final_norm=False``. Post-norm encoders (BERT family) end every block with a LayerNorm and have
no final norm; their head is the pooler + classifier on the [CLS] token.

Hooks are used in one place only: Hugging Face returns the last hidden state of a decoder *after* the
final norm, so the raw output of block L is read from the input of the final norm by a forward pre-hook
that lives inside the `capture_input` context manager.
"""
from __future__ import annotations

import hashlib
import json
import operator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from .vit import VisionTransformer

POOLINGS = ("cls", "mean", "last", "tokens")


@dataclass
class Hidden:
    """The tokens after every block of one batch.

    states: (L, B, T, d) outputs of blocks 1..L (raw: no final norm applied).
    mask: (B, T) bool, True at real tokens (False at padding).
    input_ids: (B, T) token ids of text models (None for images).
    num_prefix: number of leading non-content tokens (vision: CLS, distillation, register tokens).
    """

    states: torch.Tensor
    mask: torch.Tensor
    input_ids: torch.Tensor | None = None
    num_prefix: int = 0


# ---- context managers --------------------------------------------------------------------------------
@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode inside the block; restore every submodule's train/eval flag afterwards."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


@contextmanager
def capture_input(module: nn.Module) -> Iterator[list]:
    """Record the first input of every call of `module` inside the block; the hook is removed on exit.

    >>> with capture_input(model.transformer.ln_f) as seen:
    ...     model(ids)
    >>> raw_last = seen[-1]          # the output of the last block, before ln_f
    """
    seen: list = []

    def record(mod, args, kwargs):
        seen.append(args[0] if args else next(iter(kwargs.values())))

    handle = module.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


# ---- helpers -------------------------------------------------------------------------------------------
def layer_indices(layers: int | Sequence[int] | None, num_layers: int) -> list[int]:
    """1-based layer numbers -> 0-based indices, checking the range. None means all layers 1..L."""
    if layers is None:
        return list(range(num_layers))
    items = list(layers) if isinstance(layers, (list, tuple, range, torch.Tensor)) else [layers]
    if not items:
        raise ValueError(f"no layers selected: give layer numbers in 1..{num_layers}, or None for all")
    out = []
    for layer in items:
        try:
            number = operator.index(layer)
        except TypeError:
            number = None
        if number is None or isinstance(layer, bool) or not 1 <= number <= num_layers:
            raise ValueError(f"layer {layer!r} is out of range: this model has {num_layers} layers, "
                             f"numbered 1..{num_layers}")
        out.append(number - 1)
    return out


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def weights_fingerprint(model: nn.Module) -> str:
    """blake2b hash of every parameter and buffer (name, dtype, shape, bytes) of `model`."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


class LayerAdapter:
    """Base class: pooling, layer selection and fingerprints shared by every adapter."""

    kind = "?"
    has_class_token = True  # the first token is a CLS token (ViT/DeiT, BERT family)

    def __init__(self, model: nn.Module, *, name: str | None = None, final_norm: bool = True):
        self.model = model
        self.name = name or type(model).__name__
        self.final_norm = final_norm
        self.num_layers: int = 0
        self.width: int = 0
        self.num_classes: int | None = None

    # -- to be provided by subclasses
    def hidden_states(self, batch) -> Hidden:
        raise NotImplementedError

    def logits(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def readout(self, hidden: Hidden, layers=None) -> torch.Tensor:
        raise NotImplementedError

    def norm(self, h: torch.Tensor) -> torch.Tensor:
        """The model's final norm applied to (..., d) vectors (identity for post-norm encoders)."""
        return h

    def settings(self) -> dict:
        """Everything besides the weights that changes what the adapter returns (for cache keys)."""
        return {"adapter": type(self).__name__, "final_norm": self.final_norm}

    # -- shared
    @property
    def has_readout(self) -> bool:
        return self.num_classes is not None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> str:
        """One line naming the model, its size and the readout used (for notebooks and reports)."""
        return (f"{self.name}: {self.kind}, L={self.num_layers} blocks, d={self.width}, "
                f"C={self.num_classes}, readout: {self.readout_formula()}")

    def readout_formula(self) -> str:
        return "head(norm(h_l))" if self.final_norm else "head(h_l) (final norm skipped)"

    def fingerprint(self) -> str:
        """Hash of the weights and `settings()`: two adapters with equal fingerprints give equal outputs."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(repr(sorted(self.settings().items())).encode())
        digest.update(weights_fingerprint(self.model).encode())
        return digest.hexdigest()

    def _require_readout(self) -> None:
        if not self.has_readout:
            raise ValueError(f"{self.name} has no classification head, so there is nothing to read out; "
                             "attach one (e.g. load_model(..., num_labels=2) for a text encoder) or use "
                             "features only (readout=False)")

    def sample_mask(self, hidden: Hidden, pooling: str) -> torch.Tensor:
        """(B, T) bool: the token positions that are samples under `pooling='tokens'`."""
        return hidden.mask

    def pool(self, hidden: Hidden, pooling: str = "cls") -> torch.Tensor:
        """(L, B, T, d) block outputs -> (L, n, d) one vector per sample (n = B, or tokens for 'tokens')."""
        check_pooling(pooling)
        states, mask = hidden.states, hidden.mask
        if pooling == "cls":
            if self.kind == "causal-lm":
                raise ValueError("a causal language model has no CLS token (its first token sees only itself); "
                                 "use pooling='last', 'mean' or 'tokens'")
            if not self.has_class_token:
                raise ValueError(f"{self.name} has no class token; use pooling='mean'")
            return states[:, :, 0]
        if pooling == "mean":
            content = mask.clone()
            content[:, :hidden.num_prefix] = False
            weights = content.to(states.dtype)[None, :, :, None]  # (1, B, T, 1)
            return (states * weights).sum(2) / weights.sum(2).clamp_min(1)
        if pooling == "last":
            positions = torch.arange(mask.shape[1], device=mask.device)
            last = (mask.long() * positions).argmax(1)  # (B,) index of the last real token
            return states[:, torch.arange(states.shape[1], device=states.device), last]
        return states[:, self.sample_mask(hidden, pooling)]  # "tokens": (L, n_tokens, d)

    def layers(self, batch, pooling: str = "cls", layers=None) -> torch.Tensor:
        """Features of `batch` after blocks `layers` (1-based; default all): (L', n, d)."""
        check_pooling(pooling)
        index = layer_indices(layers, self.num_layers)
        hidden = self.hidden_states(batch)
        return self.pool(hidden, pooling)[index]

    def _select(self, hidden: Hidden, layers) -> torch.Tensor:
        if not isinstance(hidden, Hidden):
            raise ValueError(f"readout expects the Hidden returned by hidden_states(batch), got "
                             f"{type(hidden).__name__}")
        index = layer_indices(layers, self.num_layers)
        if index == list(range(self.num_layers)):
            return hidden.states  # all layers in order: no copy
        return hidden.states[index]


# ---- our ViT -------------------------------------------------------------------------------------------
class ViTAdapter(LayerAdapter):
    """Adapter for `layersim.models.VisionTransformer` (no hooks: it has `forward_intermediates`)."""

    kind = "vision"

    def __init__(self, model: VisionTransformer, *, name: str | None = None, final_norm: bool = True):
        super().__init__(model, name=name or "layersim-vit", final_norm=final_norm)
        self.num_layers = model.config.depth
        self.width = model.config.width
        self.num_classes = model.config.num_classes

    def settings(self) -> dict:
        return {**super().settings(), "config": asdict(self.model.config)}

    def hidden_states(self, batch) -> Hidden:
        x = batch.to(self.device) if isinstance(batch, torch.Tensor) else batch
        states = self.model.forward_intermediates(x)  # checks the shape
        mask = torch.ones(states.shape[1:3], dtype=torch.bool, device=states.device)
        return Hidden(states, mask, num_prefix=1)

    def logits(self, batch) -> torch.Tensor:
        return self.model(batch.to(self.device) if isinstance(batch, torch.Tensor) else batch)

    def norm(self, h):
        return self.model.norm(h)

    def readout(self, hidden: Hidden, layers=None) -> torch.Tensor:
        """(L', B, C): head(norm(CLS)) of every selected block (head(CLS) if final_norm=False)."""
        if not isinstance(hidden, Hidden):
            raise ValueError(f"readout expects the Hidden returned by hidden_states(batch), got "
                             f"{type(hidden).__name__}")
        cls = hidden.states[:, :, 0][layer_indices(layers, self.num_layers)]  # (L', B, d)
        return self.model.head(self.model.norm(cls) if self.final_norm else cls)


# ---- timm ViT / DeiT -----------------------------------------------------------------------------------
class TimmViTAdapter(LayerAdapter):
    """Adapter for timm ``VisionTransformer`` (ViT, DeiT incl. distilled, with or without class token).

    Block outputs come from timm's own ``forward_intermediates`` (no hooks). The readout of block l is
    ``model.forward_head(model.norm(h_l))``: the model's own final norm, pooling (token or average,
    ``fc_norm``) and head -- for distilled DeiT the mean of the class and distillation heads, as in eval.
    """

    kind = "vision"

    def __init__(self, model: nn.Module, *, name: str | None = None, final_norm: bool = True):
        for attribute in ("forward_intermediates", "forward_head", "norm", "blocks", "patch_embed"):
            if not hasattr(model, attribute):
                raise ValueError(f"{type(model).__name__} is not a timm VisionTransformer (no {attribute!r}); "
                                 "wrap it in your own LayerAdapter subclass")
        super().__init__(model, name=name or getattr(model, "default_cfg", {}).get("architecture"),
                         final_norm=final_norm)
        self.num_layers = len(model.blocks)
        self.width = model.embed_dim
        self.num_classes = model.num_classes or None
        self.num_prefix = model.num_prefix_tokens
        self.has_class_token = bool(getattr(model, "has_class_token", getattr(model, "cls_token", None) is not None))

    def settings(self) -> dict:
        return {**super().settings(), "class": f"{type(self.model).__module__}.{type(self.model).__name__}"}

    def _check(self, x) -> torch.Tensor:
        embed = self.model.patch_embed
        size = tuple(embed.img_size) if embed.img_size is not None else None
        channels = embed.proj.in_channels
        ok = isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == channels
        if ok and size is not None and not getattr(embed, "dynamic_img_size", False):
            ok = tuple(x.shape[2:]) == size
        if not ok:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"expected images of shape (batch, {channels}, {size[0] if size else 'H'}, "
                             f"{size[1] if size else 'W'}) for {self.name}, got {got}; "
                             "resize with the model's data config (timm.data.resolve_data_config)")
        return x.to(self.device)

    def hidden_states(self, batch) -> Hidden:
        x = self._check(batch)
        out = self.model.forward_intermediates(x, indices=None, norm=False, output_fmt="NLC",
                                               intermediates_only=True, return_prefix_tokens=True)
        if self.num_prefix:
            out = [torch.cat([prefix, spatial], dim=1) for spatial, prefix in out]
        states = torch.stack(out)
        mask = torch.ones(states.shape[1:3], dtype=torch.bool, device=states.device)
        return Hidden(states, mask, num_prefix=self.num_prefix)

    def logits(self, batch) -> torch.Tensor:
        return self.model(self._check(batch))

    def norm(self, h):
        return self.model.norm(h)

    def readout(self, hidden: Hidden, layers=None) -> torch.Tensor:
        """(L', B, C): the model's own head (pool, fc_norm, head) on every selected block's tokens."""
        self._require_readout()
        states = self._select(hidden, layers)
        L, B, T, d = states.shape
        flat = states.reshape(L * B, T, d)
        logits = self.model.forward_head(self.model.norm(flat) if self.final_norm else flat)
        return logits.reshape(L, B, -1)


# ---- Hugging Face --------------------------------------------------------------------------------------
class _HFText(LayerAdapter):
    """Tokenisation shared by the Hugging Face adapters. A batch is a list of strings, a list of text pairs,
    or a dict of tensors (``input_ids``, ``attention_mask``, e.g. a tokenizer's output)."""

    def __init__(self, model, tokenizer, *, name=None, final_norm=True, max_length=128):
        super().__init__(model, name=name or getattr(model.config, "_name_or_path", None) or type(model).__name__,
                         final_norm=final_norm)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.num_layers = model.config.num_hidden_layers
        self.width = model.config.hidden_size
        self.base = model.base_model

    def settings(self) -> dict:
        tok = self.tokenizer
        vocab = ""
        if tok is not None and hasattr(tok, "backend_tokenizer"):
            spec = json.loads(tok.backend_tokenizer.to_str())
            for state in ("padding", "truncation"):  # set by the last call, not part of the vocabulary
                spec.pop(state, None)
            vocab = hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=16).hexdigest()
        return {**super().settings(), "max_length": self.max_length, "tokenizer": type(tok).__name__,
                "vocab": vocab, "model_class": type(self.model).__name__}

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
            self.tokenizer.padding_side = "right"
            pairs = not isinstance(batch[0], str)
            first = [p[0] for p in batch] if pairs else list(batch)
            second = [p[1] for p in batch] if pairs else None
            enc = dict(self.tokenizer(first, second, padding=True, truncation=True, max_length=self.max_length,
                                      return_tensors="pt"))
        elif hasattr(batch, "keys") and "input_ids" in batch:
            enc = {k: torch.as_tensor(v) for k, v in batch.items()}
        else:
            what = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"{self.name} reads text: expected a non-empty list of strings (or of text pairs) or "
                             f"a dict with 'input_ids', got {what}")
        ids = enc["input_ids"]
        if ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, tokens), got {tuple(ids.shape)}")
        enc.setdefault("attention_mask", torch.ones_like(ids))
        for name in ("attention_mask", "token_type_ids"):
            if name in enc and enc[name].shape != ids.shape:
                raise ValueError(f"{name} {tuple(enc[name].shape)} does not match input_ids {tuple(ids.shape)}")
        keep = ("input_ids", "attention_mask", "token_type_ids")
        return {k: v.to(self.device) for k, v in enc.items() if k in keep}


def _find_encoder_head(model: nn.Module):
    """The sequence-classification head of a Hugging Face encoder as a function (B, T, d) -> (B, C),
    with a short description; (None, None) when the model has no head."""
    classifier = getattr(model, "classifier", None)
    if classifier is None:
        return None, None
    pooler = getattr(model.base_model, "pooler", None) or getattr(model, "pooler", None)
    pre = getattr(model, "pre_classifier", None)
    activation = getattr(model.base_model, "pooler_activation", None)
    if pooler is not None and activation is not None and isinstance(classifier, nn.Linear):  # ALBERT
        return (lambda h: classifier(activation(pooler(h[:, 0])))), "classifier(tanh(pooler(h_l[CLS])))"
    if pooler is not None and isinstance(classifier, nn.Linear):  # BERT, MiniLM (pooler: dense + tanh on [CLS])
        return (lambda h: classifier(pooler(h))), "classifier(pooler(h_l))"
    if pre is not None and isinstance(classifier, nn.Linear):  # DistilBERT
        return (lambda h: classifier(torch.relu(pre(h[:, 0])))), "classifier(relu(pre_classifier(h_l[CLS])))"
    if not isinstance(classifier, nn.Linear):  # RoBERTa, ELECTRA: a head module reading the sequence
        return (lambda h: classifier(h)), f"{type(classifier).__name__}(h_l)"
    raise ValueError(f"don't know how {type(model).__name__} turns hidden states into logits (a linear "
                     "'classifier' without a pooler); write a LayerAdapter subclass for it")


class HFEncoder(_HFText):
    """Adapter for Hugging Face encoders (BERT family, incl. MiniLM), bare or *ForSequenceClassification.

    Hidden states come from ``output_hidden_states`` (index 0, the embeddings, is dropped). The encoders
    are post-norm, so there is no final norm: the readout of layer l is the model's own head on h_l
    (BERT: classifier(pooler(h_l)), dropout off).
    ``HFEncoder(path)`` loads a local folder (as in the first version of this module).
    """

    kind = "encoder"

    def __init__(self, model, tokenizer=None, *, name=None, final_norm: bool = True, max_length: int = 128,
                 num_labels: int | None = None):
        if isinstance(model, (str, Path)):
            model, tokenizer = _load_hf_encoder(str(model), num_labels=num_labels)
        super().__init__(model, tokenizer, name=name, final_norm=final_norm, max_length=max_length)
        self._head, self.head_formula = _find_encoder_head(model)
        self.num_classes = model.config.num_labels if self._head is not None else None

    def readout_formula(self) -> str:
        return (self.head_formula or "no head") + " (post-norm encoder: no final norm)"

    def hidden_states(self, batch) -> Hidden:
        enc = self.encode(batch)
        out = self.base(**enc, output_hidden_states=True)
        states = torch.stack(out.hidden_states[1:])
        return Hidden(states, enc["attention_mask"].bool(), input_ids=enc["input_ids"])

    def logits(self, batch) -> torch.Tensor:
        self._require_readout()
        return self.model(**self.encode(batch)).logits

    def readout(self, hidden: Hidden, layers=None) -> torch.Tensor:
        """(L', B, C): the model's classification head on every selected block's tokens."""
        self._require_readout()
        states = self._select(hidden, layers)
        L, B, T, d = states.shape
        logits = self._head(states.reshape(L * B, T, d))
        if logits.shape != (L * B, self.num_classes):
            raise ValueError(f"the head of {type(self.model).__name__} ({self.head_formula}) gave shape "
                             f"{tuple(logits.shape)}, not (batch, {self.num_classes}): this model family is not "
                             "supported; write a LayerAdapter subclass for it")
        return logits.reshape(L, B, -1)


FINAL_NORM_NAMES = ("ln_f", "norm", "final_layernorm", "norm_f", "final_norm")


class HFCausalLM(_HFText):
    """Adapter for Hugging Face causal LMs (GPT-2, Llama-style incl. SmolLM2, ...).

    Readout of layer l: ``lm_head(norm(h_l))`` with the model's final norm (``ln_f`` for GPT-2, ``norm``
    for Llama) when ``final_norm=True`` (default), ``lm_head(h_l)`` when False (as the authors' GPT-2 code).
    Hidden states 1..L-1 come from ``output_hidden_states``; Hugging Face returns layer L after the final
    norm, so the raw output of block L is captured at the input of the final norm (`capture_input`).
    """

    kind = "causal-lm"
    has_class_token = False

    def __init__(self, model, tokenizer=None, *, name=None, final_norm: bool = True, max_length: int = 256,
                 norm: nn.Module | None = None):
        super().__init__(model, tokenizer, name=name, final_norm=final_norm, max_length=max_length)
        if norm is None:
            found = [n for n in FINAL_NORM_NAMES if isinstance(getattr(self.base, n, None), nn.Module)]
            if not found:
                raise ValueError(f"no final norm found in {type(model).__name__}: looked for "
                                 f"{', '.join(FINAL_NORM_NAMES)} on its base model {type(self.base).__name__}; "
                                 "pass the module that normalises the last block's output as norm=...")
            norm = getattr(self.base, found[0])
            self.norm_name = found[0]
        else:
            self.norm_name = "norm (given)"
        self.norm_module = norm
        self.head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if self.head is None:
            raise ValueError(f"{type(model).__name__} has no language-model head (get_output_embeddings() is "
                             "None); load it with AutoModelForCausalLM, not AutoModel")
        if getattr(model.config, "final_logit_softcapping", None) or getattr(model.config, "logit_scale", None):
            raise ValueError(f"{type(model).__name__} rescales its logits after lm_head (softcapping/logit "
                             "scale), which this adapter does not reproduce; write a subclass")
        self.num_classes = self.head.out_features
        if tokenizer is not None and tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id will do

    def readout_formula(self) -> str:
        return f"lm_head({self.norm_name}(h_l))" if self.final_norm else f"lm_head(h_l) ({self.norm_name} skipped)"

    def sample_mask(self, hidden: Hidden, pooling: str) -> torch.Tensor:
        """(B, T) bool: real positions whose next position is real too (each has a next-token target)."""
        mask = hidden.mask
        return torch.cat([mask[:, :-1] & mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)

    def next_tokens(self, hidden: Hidden) -> torch.Tensor:
        """(n_tokens,) the target (next token) of every sample of pooling='tokens', in the same order."""
        targets = torch.cat([hidden.input_ids[:, 1:], hidden.input_ids[:, :1]], dim=1)
        return targets[self.sample_mask(hidden, "tokens")]

    def hidden_states(self, batch) -> Hidden:
        enc = self.encode(batch)
        with capture_input(self.norm_module) as seen:
            out = self.base(**enc, output_hidden_states=True, use_cache=False)
        if len(out.hidden_states) != self.num_layers + 1 or len(seen) != 1:
            raise ValueError(f"{self.name}: expected {self.num_layers + 1} hidden states and one call of the "
                             f"final norm, got {len(out.hidden_states)} and {len(seen)}")
        states = torch.stack(list(out.hidden_states[1:-1]) + [seen[0]])
        return Hidden(states, enc["attention_mask"].bool(), input_ids=enc["input_ids"])

    def logits(self, batch) -> torch.Tensor:
        return self.model(**self.encode(batch), use_cache=False).logits

    def norm(self, h):
        return self.norm_module(h)

    def readout_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """(..., d) hidden vectors of any layer -> (..., V) logits: lm_head(norm(h)) (lm_head(h) if
        final_norm=False)."""
        if vectors.shape[-1] != self.width:
            raise ValueError(f"expected vectors of width {self.width}, got shape {tuple(vectors.shape)}")
        return self.head(self.norm_module(vectors) if self.final_norm else vectors)

    def readout(self, hidden: Hidden, layers=None) -> torch.Tensor:
        """(L', B, T, V) next-token logits of every selected layer at every position (large: for many
        tokens use ``readout_vectors`` on chunks, as `layersim.extract` does)."""
        return self.readout_vectors(self._select(hidden, layers))


# ---- choosing an adapter -------------------------------------------------------------------------------
def adapt(model: nn.Module, tokenizer=None, **kwargs) -> LayerAdapter:
    """The adapter for `model`: our ViT, a timm ViT/DeiT, a Hugging Face encoder or causal LM.

    kwargs go to the adapter (final_norm, max_length, name; norm= for causal LMs).
    """
    if isinstance(model, LayerAdapter):
        return model
    if isinstance(model, VisionTransformer):
        return ViTAdapter(model, **kwargs)
    module = type(model).__module__
    if module.startswith("timm."):
        return TimmViTAdapter(model, **kwargs)
    if module.startswith("transformers."):
        cls_name = type(model).__name__
        if cls_name.endswith(("ForCausalLM", "LMHeadModel")):
            return HFCausalLM(model, tokenizer, **kwargs)
        if getattr(model.config, "is_decoder", False) or getattr(model.config, "is_encoder_decoder", False):
            raise ValueError(f"{cls_name} is not a supported Hugging Face model: load a decoder with "
                             "AutoModelForCausalLM")
        if cls_name.endswith("ForSequenceClassification") or cls_name.endswith("Model"):
            if not is_encoder_type(model.config.model_type):
                raise ValueError(f"{cls_name} is a decoder without its language-model head; load it with "
                                 "AutoModelForCausalLM")
            return HFEncoder(model, tokenizer, **kwargs)
        raise ValueError(f"don't know how to read the layers of {cls_name}; supported: bare encoders and "
                         "*ForSequenceClassification, *ForCausalLM / *LMHeadModel")
    raise ValueError(f"don't know how to read the layers of {type(model).__name__} ({module}); supported: "
                     "layersim VisionTransformer, timm VisionTransformer, Hugging Face encoders and causal LMs. "
                     "For another model subclass layersim.models.LayerAdapter")


def is_encoder_type(model_type: str) -> bool:
    """True for Hugging Face model types that are bidirectional encoders (they have a masked-LM head)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _load_hf_encoder(path: str, num_labels: int | None = None):
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if num_labels is not None:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    else:
        model = AutoModel.from_pretrained(path)
    return model.eval(), tokenizer
