"""One interface over the transformers the paper studies: the output of every block, and the model's own
last-layer classifier applied to each of them. Everything that depends on the model family lives here, so
that extraction, training and early exit call one interface and never ask which family a model is.

Every adapter has
- ``num_layers`` (L), ``width`` (d), ``num_classes`` (C: classes, or the vocabulary of a language model;
  ``None`` when the model has no head), ``final_norm``, ``readout_pooling`` and ``vocabulary_readout``;
- ``hidden_states(batch, upto=None) -> Hidden``: the tokens after blocks 1..L, (L, B, T, d), and the
  padding mask; ``upto=l`` runs only blocks 1..l (a real truncated forward: it costs about l/L of a full one);
- ``pool(hidden, pooling) -> (L, n, d)``: one vector per sample and layer; ``targets(hidden, labels)``:
  the target of each of those samples (the labels of a classifier, the next tokens of a causal LM);
- ``readout_vectors(vectors, layer)``: the last-layer classifier on already-pooled vectors (..., d) -> (..., C);
  ``readout(hidden, layers=None)``: the same on every layer of a batch;
- ``logits(batch)``: the model's own output; the readout of layer L always equals it.

Pooling (the token choice) is always explicit:
- "cls": the first token (ViT/DeiT class token, BERT [CLS]); not defined for causal LMs;
- "mean": the mean over real tokens (text: every non-padding token incl. [CLS]/[SEP], as
  sentence-transformers do; vision: the patch tokens, without CLS/distillation/register tokens);
- "last": the last non-padding token (the natural summary of a causal LM);
- "tokens": every non-padding position is one sample, (L, n_tokens, d). For a causal LM the last
  position of each sequence is left out, so that every sample has a target: the next token.
``readout_pooling`` is the pooling the model's own head reads ("cls" for ViT/DeiT and the BERT family,
"mean" for an average-pooled timm ViT, "tokens" for a causal LM).

Readout of a hidden layer (PAPER.md): head(norm(h_l)). For pre-norm models (ViT/DeiT, GPT-2, Llama)
``norm`` is the model's final norm (``norm``, ``ln_f``). Conventions, by ``final_norm``:
- ``final_norm=True`` (default): every layer is read as head(norm(h_l)), as the model itself reads layer L;
- ``final_norm=False``: layers 1..L-1 are read as head(h_l), the final norm skipped, as the authors' GPT-2
  code does; layer L is still the model's own prediction head(norm(h_L)).
Either way the readout of layer L equals ``logits(batch)``, so saturation (defined against the model's
own prediction) has the right reference. The authors' GPT-2 code also takes Hugging Face's last hidden
state (normed) as the layer-L feature for COS: ``layersim.extract.extract(..., feature_norm="hf")``;
``AUTHORS_GPT2`` names that whole convention. Post-norm encoders (BERT family) end every block with a
LayerNorm and have no final norm; their head is the pooler + classifier on the [CLS] token.

Hooks are used in two places, each inside a context manager that removes them: Hugging Face returns the
last hidden state of a decoder *after* the final norm, so the raw output of block L is read from the
input of the final norm (`capture_input`); and the block-by-block stepping of a Hugging Face encoder
(``begin``) records the inputs of its first block, the same way.
"""
from __future__ import annotations

import functools
import json
import operator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from dataclasses import field, replace
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from ..storage import stable_hash, weights_fingerprint
from .inputs import check_images
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


@dataclass
class BlockState:
    """A batch between two blocks, for running a model block by block (`LayerAdapter.begin`, ``run_blocks``).

    tokens: (B, T, d) output of block `layer` (layer 0: the embedded input entering block 1).
    layer: number of blocks run so far (0..L).
    mask: (B, T) bool, True at real tokens. input_ids: (B, T) for text, else None.
    num_prefix: leading non-content tokens (vision: CLS, distillation, register tokens).
    index: (B,) position of every sample in the batch given to ``begin`` (samples leave with `select`).
    block_args, block_kwargs: what every block call gets besides the tokens (Hugging Face: the attention
        mask, position ids, ...); tensors whose first dimension is the batch are selected with it.
    """

    tokens: torch.Tensor
    layer: int
    mask: torch.Tensor
    index: torch.Tensor
    input_ids: torch.Tensor | None = None
    num_prefix: int = 0
    block_args: tuple = ()
    block_kwargs: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def select(self, keep) -> "BlockState":
        """The state of the samples `keep` only: a (B,) bool mask or a 1-D tensor of row indices."""
        keep = torch.as_tensor(keep, device=self.tokens.device)
        if keep.dtype == torch.bool:
            if keep.shape != (self.batch_size,):
                raise ValueError(f"a bool selection must have shape ({self.batch_size},), got {tuple(keep.shape)}")
            keep = keep.nonzero()[:, 0]
        elif keep.dim() != 1 or keep.is_floating_point() or keep.is_complex():
            raise ValueError(f"select takes a (B,) bool mask or a 1-D tensor of row indices, got shape "
                             f"{tuple(keep.shape)} ({keep.dtype})")
        size = self.batch_size

        def take(value):
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size:
                return value[keep.to(value.device)]
            return value  # broadcast over the batch (first dimension 1), or not a tensor

        return replace(self, tokens=self.tokens[keep], mask=self.mask[keep], index=self.index[keep.to(self.index.device)],
                       input_ids=None if self.input_ids is None else self.input_ids[keep],
                       block_args=tuple(take(a) for a in self.block_args),
                       block_kwargs={k: take(v) for k, v in self.block_kwargs.items()})

    def hidden(self) -> Hidden:
        """The state as a one-layer `Hidden` (states (1, B, T, d)), e.g. for ``adapter.pool``."""
        return Hidden(self.tokens[None], self.mask, self.input_ids, self.num_prefix)


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


# the settings that reproduce the authors' GPT-2 curves (their code; see the module docstring): pass them to
# load_model/adapt (final_norm) and to extract (feature_norm)
AUTHORS_GPT2 = {"final_norm": False, "feature_norm": "hf"}

# rows of vocabulary logits computed at once by `readout_chunks`: bounds the memory of a language-model
# readout (~64 MB of float32)
LOGIT_ELEMENTS_PER_CHUNK = 2 ** 24


def _find_layer_list(base: nn.Module):
    """(owner module, attribute name) of the ModuleList of blocks of a Hugging Face base model, or None."""
    for path in ("encoder.layer", "transformer.layer", "layers", "h", "encoder.layers", "layer"):
        owner = base
        *parents, attribute = path.split(".")
        for part in parents:
            owner = getattr(owner, part, None)
        modules = getattr(owner, attribute, None) if owner is not None else None
        if isinstance(modules, nn.ModuleList):
            return owner, attribute
    return None


def _install_output_hooks(base: nn.Module) -> None:
    """Recent transformers record hidden states with hooks installed on the first call that asks for them,
    on the blocks present at that moment: install them on all blocks now, so that a first call on a cut
    list does not leave the later blocks without them."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # versions that collect hidden states in the forward loop need nothing
        return
    maybe_install_capturing_hooks(base)


@contextmanager
def truncated_blocks(base: nn.Module, upto: int | None) -> Iterator[bool]:
    """Inside the block the model's list of blocks holds only blocks 1..upto, so its own forward stops
    there (a real truncated forward). Yields False when the model keeps its blocks elsewhere (e.g. ALBERT's
    shared layer groups): then the full forward runs and the caller keeps the first `upto` states."""
    found = _find_layer_list(base) if upto is not None else None
    if found is None:
        yield False
        return
    owner, attribute = found
    _install_output_hooks(base)  # on every block, before the list is cut (transformers installs them once)
    full = getattr(owner, attribute)
    setattr(owner, attribute, nn.ModuleList(list(full)[:upto]))
    try:
        yield True
    finally:
        setattr(owner, attribute, full)


def _check_upto(upto, num_layers: int) -> int:
    if upto is None:
        return num_layers
    return layer_indices(upto, num_layers)[0] + 1


class LinearReader:
    """A classifier of one layer written as ``linear(pre(v))``: callable, (..., d) -> (..., C).

    `pre` (the final norm and whatever the head does before its last linear layer) and `linear` (an
    ``nn.Linear``) are exposed so that a loss can fuse the linear layer with the cross-entropy and never
    hold the logits of a large vocabulary (`layersim.fused_ce`).
    """

    def __init__(self, pre, linear: nn.Linear):
        self.pre, self.linear = pre, linear

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pre(vectors))


class LayerAdapter:
    """Base class: pooling, targets, layer selection, readout in chunks and fingerprints shared by every
    adapter. A subclass provides ``hidden_states``, ``logits``, ``readout_vectors`` and (pre-norm) ``norm``."""

    has_class_token = True  # the first token is a CLS token (ViT/DeiT, BERT family)
    readout_pooling = "cls"  # the pooling the model's own head reads
    vocabulary_readout = False  # C is a vocabulary: read out per token, keep summaries rather than logits

    def __init__(self, model: nn.Module, *, name: str | None = None, final_norm: bool = True):
        if not isinstance(final_norm, bool):
            raise TypeError(f"final_norm must be True or False, got {final_norm!r}")
        self.model = model
        self.name = name or type(model).__name__
        self.final_norm = final_norm
        self.num_layers: int = 0
        self.width: int = 0
        self.num_classes: int | None = None

    # -- to be provided by subclasses
    def hidden_states(self, batch, upto: int | None = None) -> Hidden:
        """Tokens after blocks 1..upto (default L) of `batch`: Hidden with states (upto, B, T, d)."""
        raise NotImplementedError

    def logits(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def _head(self, vectors: torch.Tensor) -> torch.Tensor:
        """The model's head on (N, d) vectors that are already normed where the model norms -> (N, C)."""
        raise NotImplementedError

    def norm(self, h: torch.Tensor) -> torch.Tensor:
        """The model's final norm applied to (..., d) vectors (identity for post-norm encoders)."""
        return h

    # -- block by block (per-sample early exit, FLOPs per block)
    def block_modules(self) -> list[nn.Module]:
        """The model's L transformer blocks, in order."""
        raise NotImplementedError(f"{self.name}: this adapter does not expose its blocks")

    def begin(self, batch) -> BlockState:
        """`batch` embedded, entering block 1: a `BlockState` at layer 0 (the tokens, and whatever else the
        blocks take: attention mask, position ids). Then ``run_blocks(state, l)`` runs blocks up to l."""
        raise NotImplementedError(f"{self.name} ({type(self).__name__}) cannot be run block by block: supported "
                                  "are our ViT, timm ViT/DeiT and Hugging Face encoders; for a fixed exit layer use "
                                  "hidden_states(batch, upto=l)")

    def run_blocks(self, state: BlockState, stop: int) -> BlockState:
        """Run blocks state.layer+1 .. stop (1-based; state.layer <= stop <= L) -> the state after block stop."""
        if not isinstance(state, BlockState):
            raise ValueError(f"run_blocks takes the BlockState of begin(batch), got {type(state).__name__}")
        if isinstance(stop, bool) or not isinstance(stop, int) or not state.layer <= stop <= self.num_layers:
            raise ValueError(f"stop must be a layer in {state.layer}..{self.num_layers} (the state is after block "
                             f"{state.layer}), got {stop!r}")
        tokens = state.tokens
        for block in self.block_modules()[state.layer:stop]:
            out = block(tokens, *state.block_args, **state.block_kwargs)
            tokens = out[0] if isinstance(out, (tuple, list)) else out
        return replace(state, tokens=tokens, layer=stop)

    def settings(self) -> dict:
        """Everything besides the weights that changes what the adapter returns (for cache keys)."""
        return {"adapter": type(self).__name__, "final_norm": self.final_norm}

    # the readout poolings this adapter's head can be switched to (`set_readout_pooling`)
    settable_readout_poolings: tuple = ()

    def set_readout_pooling(self, pooling: str) -> "LayerAdapter":
        """Make the head read `pooling` of every layer instead of the model's own pooling (e.g. a sentence
        encoder trained with mean pooling: ``classifier(pooler(mean(h_l)))``); returns the adapter."""
        allowed = tuple(dict.fromkeys((type(self).readout_pooling,) + tuple(self.settable_readout_poolings)))
        if pooling not in allowed:
            raise ValueError(f"the head of {self.name} can read pooling {' or '.join(map(repr, allowed))}, not "
                             f"{pooling!r}")
        self.readout_pooling = pooling
        return self

    # -- poolings and targets
    @property
    def poolings(self) -> tuple:
        """The poolings defined for this model."""
        return tuple(p for p in POOLINGS if p != "cls" or self.has_class_token)

    @property
    def readout_poolings(self) -> tuple:
        """The poolings whose samples have a readout: for a classifier every pooling with one sample per
        input (the head then reads its own pooling, ``readout_pooling``, of the same inputs)."""
        return tuple(p for p in self.poolings if p != "tokens")

    def head_pooling(self, pooling: str) -> str:
        """The pooling of the vectors the head reads for the samples of `pooling`: a classifier's head reads
        its own pooling of each input whatever pooling the features use."""
        return self.readout_pooling

    def check_pooling(self, pooling: str) -> None:
        check_pooling(pooling)
        if pooling not in self.poolings:
            raise ValueError(f"{self.name} has no class token; use pooling='mean'")

    def check_readout_pooling(self, pooling: str) -> None:
        """Raise unless the head can read vectors of `pooling` (and the model has a head)."""
        self._require_readout()
        self.check_pooling(pooling)
        if pooling not in self.readout_poolings:
            raise ValueError(f"{self.name} classifies whole inputs, so its readout has one row per input, not per "
                             f"token: use readout=False with pooling={pooling!r}, or another pooling")

    def sample_mask(self, hidden: Hidden, pooling: str) -> torch.Tensor:
        """(B, T) bool: the token positions that are samples under `pooling='tokens'`."""
        return hidden.mask

    def pool(self, hidden: Hidden, pooling: str = "cls") -> torch.Tensor:
        """(L, B, T, d) block outputs -> (L, n, d) one vector per sample (n = B, or tokens for 'tokens')."""
        self.check_pooling(pooling)
        states, mask = hidden.states, hidden.mask
        if pooling == "cls":
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

    def targets(self, hidden: Hidden, labels=None, pooling: str | None = None) -> torch.Tensor | None:
        """(n,) the target of every sample of ``pool(hidden, pooling)`` (default: the readout pooling), or
        None when there is none: a classifier's labels (checked: integers in [0, C), one per input)."""
        if labels is None:
            return None
        labels = torch.as_tensor(labels)
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}; convert them, "
                            "e.g. labels.long(), after checking they are whole numbers")
        batch = hidden.states.shape[1]
        if labels.shape != (batch,):
            raise ValueError(f"got labels of shape {tuple(labels.shape)} for a batch of {batch} inputs; "
                             "give one integer label per input")
        labels = labels.long().to(hidden.states.device)
        if self.num_classes is not None and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)]
            raise ValueError(f"labels must lie in [0, {self.num_classes}) for {self.name} ({self.num_classes} "
                             f"classes), got {sorted(set(bad.tolist()))[:5]}; does the data set match the model's "
                             "number of classes?")
        if (pooling or self.readout_pooling) == "tokens":  # every token of an input carries the input's label
            return labels.repeat_interleave(self.sample_mask(hidden, "tokens").sum(1))
        return labels

    # -- readout
    def readout_vectors(self, vectors: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """The model's own last-layer classifier on pooled vectors: (..., d) -> (..., C).

        layer: the 1-based layer the vectors come from. The final norm is applied when ``final_norm`` is
        True or `layer` is L (so the readout of layer L is always the model's own prediction); None means a
        hidden layer (the norm follows ``final_norm``).
        """
        self._require_readout()
        if not isinstance(vectors, torch.Tensor) or vectors.dim() < 1 or vectors.shape[-1] != self.width:
            got = tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__
            raise ValueError(f"expected vectors of shape (..., {self.width}) for {self.name}, got {got}")
        normed = self.norm(vectors) if (self.final_norm or layer == self.num_layers) else vectors
        flat = normed.reshape(-1, self.width)
        return self._head(flat).reshape(*vectors.shape[:-1], -1)

    def head_linear(self) -> nn.Linear | None:
        """The head's last linear layer when the head is ``head_linear(pre(norm(v)))`` (our ViT, timm
        ViT/DeiT, causal LMs); None when it is not of that form (BERT's pooler + classifier, distilled DeiT)."""
        return None

    def _pre_linear(self, normed: torch.Tensor) -> torch.Tensor:
        """What the head does between the final norm and its last linear layer (nothing, by default)."""
        return normed

    def head_reader(self, layer: int):
        """The model's own classifier as a reader of 1-based `layer`'s pooled vectors, (..., d) -> (..., C):
        a `LinearReader` (fusable with the loss) when the head ends in one linear layer, else
        ``readout_vectors(v, layer=layer)``. Equal to ``readout_vectors(v, layer=layer)`` either way."""
        self._require_readout()
        layer = layer_indices(layer, self.num_layers)[0] + 1
        linear = self.head_linear()
        if linear is None:
            return functools.partial(self.readout_vectors, layer=layer)
        normed = self.final_norm or layer == self.num_layers
        return LinearReader(lambda v: self._pre_linear(self.norm(v) if normed else v), linear)

    def readout_stack(self, vectors: torch.Tensor, layers=None) -> torch.Tensor:
        """(L', n, d) pooled vectors of `layers` (1-based; default all L) -> (L', n, C) readout logits."""
        numbers = [i + 1 for i in layer_indices(layers, self.num_layers)]
        if vectors.dim() != 3 or vectors.shape[0] != len(numbers):
            raise ValueError(f"expected a stack of shape ({len(numbers)}, n, {self.width}) for layers {numbers}, "
                             f"got {tuple(vectors.shape)}")
        return torch.stack([self.readout_vectors(v, layer=l) for v, l in zip(vectors, numbers)])

    def readout(self, hidden: Hidden, layers=None) -> torch.Tensor:
        """(L', B, C): the model's own head on every selected block (pooled as the head reads it)."""
        self._require_readout()
        index = self._check_hidden(hidden, layers)
        vectors = self.pool(hidden, self.readout_pooling)[index]
        return self.readout_stack(vectors, [i + 1 for i in index])

    def readout_chunks(self, hidden: Hidden, pooling: str, layers=None) -> Iterator[tuple]:
        """The readout of every selected layer over the samples of ``pool(hidden, pooling)``, in chunks of
        rows so that memory stays bounded for a vocabulary: yields ``(rows, logits, final_logits)`` with
        `rows` a slice of the samples, logits (L', rows, C) of the selected layers and final_logits
        (rows, C) of layer L (the model's own prediction). Needs all L layers in `hidden`."""
        self.check_readout_pooling(pooling)
        index = self._check_hidden(hidden, layers, need_all=True)
        vectors = self.pool(hidden, self.head_pooling(pooling))
        n, last = vectors.shape[1], self.num_layers - 1
        step = max(1, LOGIT_ELEMENTS_PER_CHUNK // self.num_classes)
        for start in range(0, n, step):
            rows = slice(start, min(n, start + step))
            final = self.readout_vectors(vectors[last, rows], layer=self.num_layers)
            per_layer = [final if i == last else self.readout_vectors(vectors[i, rows], layer=i + 1) for i in index]
            yield rows, torch.stack(per_layer), final

    # -- shared
    @property
    def has_readout(self) -> bool:
        return self.num_classes is not None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def describe(self) -> str:
        """One line naming the model, its size and the readout used (for notebooks and reports)."""
        return (f"{self.name}: {type(self).__name__}, L={self.num_layers} blocks, d={self.width}, "
                f"C={self.num_classes}, readout: {self.readout_formula()}")

    def readout_formula(self) -> str:
        if self.final_norm:
            return "head(norm(h_l))"
        return "head(h_l) for l < L (final norm skipped), head(norm(h_L)) for l = L"

    def fingerprint(self) -> str:
        """Hash of the weights and `settings()`: two adapters with equal fingerprints give equal outputs."""
        return stable_hash({"settings": self.settings(), "weights": weights_fingerprint(self.model)})

    def _require_readout(self) -> None:
        if not self.has_readout:
            raise ValueError(f"{self.name} has no classification head, so there is nothing to read out; "
                             "attach one (e.g. load_model(..., num_labels=2) for a text encoder) or use "
                             "features only (readout=False)")

    def layers(self, batch, pooling: str = "cls", layers=None) -> torch.Tensor:
        """Features of `batch` after blocks `layers` (1-based; default all): (L', n, d)."""
        self.check_pooling(pooling)
        index = layer_indices(layers, self.num_layers)
        hidden = self.hidden_states(batch, upto=max(index) + 1)
        return self.pool(hidden, pooling)[index]

    def _check_hidden(self, hidden: Hidden, layers, need_all: bool = False) -> list[int]:
        """0-based indices of `layers` after checking that `hidden` holds them."""
        if not isinstance(hidden, Hidden):
            raise ValueError(f"expected the Hidden returned by hidden_states(batch), got {type(hidden).__name__}")
        index = layer_indices(layers, self.num_layers)
        have = hidden.states.shape[0]
        if (need_all and have != self.num_layers) or max(index) >= have:
            raise ValueError(f"these hidden states hold blocks 1..{have} of {self.num_layers}; layer(s) "
                             f"{[i + 1 for i in index]} need hidden_states(batch) with upto >= {max(index) + 1}"
                             + (" (the readout of any layer needs layer L, the model's own prediction)"
                                if need_all else ""))
        return index


# ---- our ViT -------------------------------------------------------------------------------------------
class ViTAdapter(LayerAdapter):
    """Adapter for `layersim.models.VisionTransformer` (no hooks: it has `forward_intermediates`)."""

    def __init__(self, model: VisionTransformer, *, name: str | None = None, final_norm: bool = True):
        super().__init__(model, name=name or "layersim-vit", final_norm=final_norm)
        self.num_layers = model.config.depth
        self.width = model.config.width
        self.num_classes = model.config.num_classes

    def settings(self) -> dict:
        return {**super().settings(), "config": asdict(self.model.config)}

    def _images(self, batch) -> torch.Tensor:
        c = self.model.config
        return check_images(batch, (c.in_chans, c.image_size, c.image_size), self.dtype, self.device, self.name)

    def hidden_states(self, batch, upto: int | None = None) -> Hidden:
        states = self.model.forward_intermediates(self._images(batch), upto=_check_upto(upto, self.num_layers))
        mask = torch.ones(states.shape[1:3], dtype=torch.bool, device=states.device)
        return Hidden(states, mask, num_prefix=1)

    def logits(self, batch) -> torch.Tensor:
        return self.model(self._images(batch))

    def norm(self, h):
        return self.model.norm(h)

    def _head(self, vectors):
        return self.model.head(vectors)

    def head_linear(self):
        return self.model.head

    def block_modules(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def begin(self, batch) -> BlockState:
        tokens = self.model.embed(self._images(batch))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return BlockState(tokens, 0, mask, torch.arange(tokens.shape[0], device=tokens.device), num_prefix=1)


# ---- timm ViT / DeiT -----------------------------------------------------------------------------------
class TimmViTAdapter(LayerAdapter):
    """Adapter for timm ``VisionTransformer`` (ViT, DeiT incl. distilled, with or without class token).

    Block outputs come from timm's own ``forward_intermediates`` (no hooks). The readout of block l is the
    model's own final norm, pooling (token or average, ``fc_norm``) and head -- for distilled DeiT the mean
    of the class and distillation heads, as in eval (``forward_head``; a distilled head reads two tokens,
    so it has no readout of single pooled vectors).
    """

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
        self.distilled = getattr(model, "head_dist", None) is not None
        pool = getattr(model, "global_pool", "token")
        if pool not in ("token", "avg"):
            raise ValueError(f"{self.name} pools with global_pool={pool!r}; supported: 'token' and 'avg'")
        self.readout_pooling = "cls" if pool == "token" else "mean"

    def settings(self) -> dict:
        return {**super().settings(), "class": f"{type(self.model).__module__}.{type(self.model).__name__}"}

    def _images(self, x) -> torch.Tensor:
        embed = self.model.patch_embed
        size = tuple(embed.img_size) if embed.img_size is not None else (None, None)
        if getattr(embed, "dynamic_img_size", False):
            size = (None, None)
        return check_images(x, (embed.proj.in_channels, *size), self.dtype, self.device, self.name)

    def hidden_states(self, batch, upto: int | None = None) -> Hidden:
        upto = _check_upto(upto, self.num_layers)
        out = self.model.forward_intermediates(self._images(batch), indices=list(range(upto)), norm=False,
                                               output_fmt="NLC", intermediates_only=True,
                                               return_prefix_tokens=True, stop_early=True)
        if self.num_prefix:
            out = [torch.cat([prefix, spatial], dim=1) for spatial, prefix in out]
        states = torch.stack(out)
        mask = torch.ones(states.shape[1:3], dtype=torch.bool, device=states.device)
        return Hidden(states, mask, num_prefix=self.num_prefix)

    def logits(self, batch) -> torch.Tensor:
        return self.model(self._images(batch))

    def norm(self, h):
        return self.model.norm(h)

    def _head(self, vectors):
        if self.distilled:
            raise ValueError(f"{self.name} is a distilled DeiT whose head reads two tokens (class and "
                             "distillation); use readout(hidden), which applies forward_head to the tokens")
        return self.model.head(self._pre_linear(vectors))

    def _pre_linear(self, normed):
        return self.model.head_drop(self.model.fc_norm(normed))

    def head_linear(self):
        return None if self.distilled or not isinstance(self.model.head, nn.Linear) else self.model.head

    def block_modules(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def begin(self, batch) -> BlockState:
        model = self.model  # as timm's forward_features up to its blocks
        tokens = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(self._images(batch)))))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return BlockState(tokens, 0, mask, torch.arange(tokens.shape[0], device=tokens.device),
                          num_prefix=self.num_prefix)

    def readout(self, hidden: Hidden, layers=None) -> torch.Tensor:
        if not self.distilled:
            return super().readout(hidden, layers)
        self._require_readout()
        index = self._check_hidden(hidden, layers)
        states = hidden.states[index]
        L, B, T, d = states.shape
        normed = torch.stack([self.norm(s) if (self.final_norm or i == self.num_layers - 1) else s
                              for s, i in zip(states, index)])
        return self.model.forward_head(normed.reshape(L * B, T, d)).reshape(L, B, -1)

    def readout_chunks(self, hidden: Hidden, pooling: str, layers=None) -> Iterator[tuple]:
        if not self.distilled:
            yield from super().readout_chunks(hidden, pooling, layers)
            return
        self.check_readout_pooling(pooling)
        index = self._check_hidden(hidden, layers, need_all=True)
        final = self.readout(hidden, layers=self.num_layers)[0]
        yield slice(0, final.shape[0]), self.readout(hidden, [i + 1 for i in index]), final


# ---- Hugging Face --------------------------------------------------------------------------------------
class _HFText(LayerAdapter):
    """Tokenisation shared by the Hugging Face adapters. A batch is a list of strings, a list of text pairs,
    or a dict of tensors (``input_ids``, ``attention_mask``, e.g. a tokenizer's output)."""

    def __init__(self, model, tokenizer, *, name=None, final_norm=True, max_length=128):
        super().__init__(model, name=name or getattr(model.config, "_name_or_path", None) or type(model).__name__,
                         final_norm=final_norm)
        self.tokenizer = tokenizer
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an integer >= 2 (tokens), got {max_length!r}")
        self.max_length = max_length
        self.num_layers = model.config.num_hidden_layers
        self.width = model.config.hidden_size
        self.base = model.base_model

    def settings(self) -> dict:
        tok = self.tokenizer
        vocab = tokenizer_fingerprint(tok) if tok is not None and hasattr(tok, "backend_tokenizer") else ""
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

    @property
    def max_positions(self) -> int:
        config = self.model.config
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return 2 ** 31

    def _run(self, enc: dict, upto: int, **kwargs):
        """The base model's forward over blocks 1..upto -> (outputs, hidden states of blocks 1..upto)."""
        with truncated_blocks(self.base, upto if upto < self.num_layers else None) as truncated:
            out = self.base(**enc, output_hidden_states=True, **kwargs)
        states = list(out.hidden_states[1:])
        expected = upto if truncated else self.num_layers
        if len(states) != expected:
            raise ValueError(f"{self.name}: expected {expected} hidden states after the embeddings, got "
                             f"{len(states)}; this model family is not supported, write a LayerAdapter subclass")
        return out, states[:upto]

    def block_modules(self) -> list[nn.Module]:
        found = _find_layer_list(self.base)
        modules = list(getattr(*found)) if found is not None else []
        if len(modules) != self.num_layers:
            raise NotImplementedError(f"{self.name}: could not find its {self.num_layers} layers as one ModuleList "
                                      "(e.g. ALBERT shares one layer group): it cannot be run block by block")
        return modules


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of a tokenizer's vocabulary and rules: equal for tokenizers that encode alike. The padding and
    truncation state (set by the last call, not part of the vocabulary) is left out."""
    if hasattr(tokenizer, "backend_tokenizer"):
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        for state in ("padding", "truncation"):
            spec.pop(state, None)
        return stable_hash(spec)
    return stable_hash({"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items())})


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
    (BERT: classifier(pooler(h_l[CLS])), dropout off). Every head of this family reads the [CLS] vector.
    """

    settable_readout_poolings = ("cls", "mean")

    def __init__(self, model, tokenizer=None, *, name=None, final_norm: bool = True, max_length: int = 128,
                 readout_pooling: str = "cls"):
        super().__init__(model, tokenizer, name=name, final_norm=final_norm, max_length=max_length)
        self._sequence_head, self.head_formula = _find_encoder_head(model)
        self.num_classes = model.config.num_labels if self._sequence_head is not None else None
        self.set_readout_pooling(readout_pooling)

    def settings(self) -> dict:
        out = super().settings()
        if self.readout_pooling != "cls":
            out["readout_pooling"] = self.readout_pooling
        return out

    def readout_formula(self) -> str:
        formula = self.head_formula or "no head"
        if self.readout_pooling != "cls":
            formula += f", reading the {self.readout_pooling}-pooled h_l in place of [CLS]"
        return formula + " (post-norm encoder: no final norm)"

    def hidden_states(self, batch, upto: int | None = None) -> Hidden:
        enc = self.encode(batch)
        _, states = self._run(enc, _check_upto(upto, self.num_layers))
        return Hidden(torch.stack(states), enc["attention_mask"].bool(), input_ids=enc["input_ids"])

    def logits(self, batch) -> torch.Tensor:
        """The model's prediction (B, C): its own forward, or with a switched readout pooling the head on
        that pooling of the last layer."""
        self._require_readout()
        if self.readout_pooling == "cls":
            return self.model(**self.encode(batch)).logits
        hidden = self.hidden_states(batch)
        return self.readout_vectors(self.pool(hidden, self.readout_pooling)[-1], layer=self.num_layers)

    def _head(self, vectors):
        logits = self._sequence_head(vectors[:, None, :])  # the heads read position 0 of a sequence
        if logits.shape != (vectors.shape[0], self.num_classes):
            raise ValueError(f"the head of {type(self.model).__name__} ({self.head_formula}) gave shape "
                             f"{tuple(logits.shape)}, not (batch, {self.num_classes}): this model family is not "
                             "supported; write a LayerAdapter subclass for it")
        return logits

    def begin(self, batch) -> BlockState:
        """The model's own inputs of its first layer: the base model runs up to the entry of layer 1, where a
        forward pre-hook records the arguments (hidden states, attention mask, ...) and stops the forward."""
        enc = self.encode(batch)
        first = self.block_modules()[0]
        seen = {}

        def record(module, args, kwargs):
            seen["args"], seen["kwargs"] = args, dict(kwargs)
            raise _EnteredFirstBlock

        handle = first.register_forward_pre_hook(record, with_kwargs=True)
        try:
            self.base(**enc)
        except _EnteredFirstBlock:
            pass
        finally:
            handle.remove()
        if "args" not in seen:
            raise ValueError(f"{self.name}: the forward pass never reached its first layer")
        args, kwargs = seen["args"], seen["kwargs"]
        tokens, rest = (args[0], tuple(args[1:])) if args else (kwargs.pop("hidden_states"), ())
        return BlockState(tokens, 0, enc["attention_mask"].bool(), torch.arange(tokens.shape[0], device=tokens.device),
                          input_ids=enc["input_ids"], block_args=rest, block_kwargs=kwargs)


class _EnteredFirstBlock(Exception):
    """Raised by HFEncoder.begin's pre-hook once it has recorded the inputs of layer 1."""


FINAL_NORM_NAMES = ("ln_f", "norm", "final_layernorm", "norm_f", "final_norm")


class HFCausalLM(_HFText):
    """Adapter for Hugging Face causal LMs (GPT-2, Llama-style incl. SmolLM2, ...).

    Every token position is a sample (pooling "tokens", the readout pooling); its target is the next token.
    Readout of layer l: ``lm_head(norm(h_l))`` with the model's final norm (``ln_f`` for GPT-2, ``norm`` for
    Llama) when ``final_norm=True`` (default); ``lm_head(h_l)`` for l < L when False, as the authors' GPT-2
    code (layer L is always the model's own prediction). Hidden states 1..L-1 come from
    ``output_hidden_states``; Hugging Face returns layer L after the final norm, so the raw output of
    block L is captured at the input of the final norm (`capture_input`).
    """

    has_class_token = False
    readout_pooling = "tokens"
    vocabulary_readout = True

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
        if tokenizer is not None:
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id will do
            if len(tokenizer) > self.num_classes:
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
        if self.final_norm:
            return f"lm_head({self.norm_name}(h_l))"
        return f"lm_head(h_l) ({self.norm_name} skipped) for l < L, lm_head({self.norm_name}(h_L)) for l = L"

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

    def hidden_states(self, batch, upto: int | None = None) -> Hidden:
        enc = self.encode(batch)
        upto = _check_upto(upto, self.num_layers)
        with capture_input(self.norm_module) as seen:
            _, states = self._run(enc, upto, use_cache=False)
        if len(seen) != 1:
            raise ValueError(f"{self.name}: expected one call of the final norm, got {len(seen)}")
        # the last returned state went through the final norm: take the raw block output from its input
        states = states[:-1] + [seen[0]] if upto == len(states) else states
        return Hidden(torch.stack(states), enc["attention_mask"].bool(), input_ids=enc["input_ids"])

    def logits(self, batch) -> torch.Tensor:
        return self.model(**self.encode(batch), use_cache=False).logits

    def norm(self, h):
        return self.norm_module(h)

    def _head(self, vectors):
        return self.head(vectors)

    def head_linear(self):
        return self.head if isinstance(self.head, nn.Linear) else None

    def readout(self, hidden: Hidden, layers=None) -> torch.Tensor:
        """(L', B, T, V) next-token logits of every selected layer at every position (large: for many
        tokens use `readout_chunks`, as `layersim.extract` does)."""
        index = self._check_hidden(hidden, layers)
        return torch.stack([self.readout_vectors(hidden.states[i], layer=i + 1) for i in index])


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
        if getattr(model.config, "is_encoder_decoder", False) or is_seq2seq_type(model.config.model_type):
            raise ValueError(f"{cls_name} belongs to an encoder-decoder family ({model.config.model_type}), which "
                             "layersim does not read; supported: encoders (BERT family) and causal LMs")
        if getattr(model.config, "is_decoder", False):
            raise ValueError(f"{cls_name} is configured as a decoder: load it with AutoModelForCausalLM")
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


def is_seq2seq_type(model_type: str) -> bool:
    """True for Hugging Face model types of encoder-decoder families (T5, BART, ...), even for their encoder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
