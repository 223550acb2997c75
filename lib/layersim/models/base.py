"""What every adapter shares: the hidden states of a batch, pooling, targets, and reading a layer.

An adapter wraps one model and answers, for any 1-based layer l = 1..L:
- ``hidden_states(batch, upto=None) -> Hidden``: the raw tokens after blocks 1..upto (default L), (upto, B, T, d);
  ``upto=l`` runs only blocks 1..l (a real truncated forward);
- ``pool(hidden, pooling) -> (L, n, d)``: one vector per sample and layer; ``targets(hidden, labels)``;
- ``head_inputs(hidden) -> (L, n, d)``: what the model's head reads of each layer (its own pooling; for a head
  that normalises the tokens before pooling them, the normalised tokens pooled);
- ``reader(v, layer) -> (n, C)``: the model's own last-layer classifier on layer `layer`'s head inputs (the
  logit lens, `layersim.models.readers.SharedHead`); ``read(hidden)`` applies a reader to every layer;
- ``logits(batch)``: the model's own output.

Readout of a hidden layer (PAPER.md): head(norm(h_l)), ``norm`` the model's final norm (pre-norm models).
``final_norm=True`` (default) applies it on every layer; ``final_norm=False`` skips it on layers 1..L-1, as
the authors' GPT-2 code does (`AUTHORS_GPT2_READOUT`); layer L is always the model's own prediction.
Post-norm encoders (BERT family) have no final norm.

When an adapter is made it checks itself on a small probe batch (`layersim.models.selfcheck`): the readout of
layer L equals the model's own logits, and every truncated forward equals the full forward's layers. An
adapter that fails is refused with an error saying which check failed; ``check=False`` skips the check.

Pooling (the token choice) is always explicit:
- "cls": the first token (ViT/DeiT class token, BERT [CLS]); not defined for causal LMs;
- "mean": the mean over real tokens (text: every non-padding token incl. [CLS]/[SEP], as
  sentence-transformers do; vision: the patch tokens, without CLS/distillation/register tokens);
- "last": the last non-padding token (the natural summary of a causal LM);
- "tokens": every non-padding position is one sample, (L, n_tokens, d). For a causal LM the last
  position of each sequence is left out, so that every sample has a target: the next token.
"""
from __future__ import annotations

import operator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from ..storage import stable_hash, weights_fingerprint
from ..validate import whole_number

POOLINGS = ("cls", "mean", "last", "tokens")

# the settings that reproduce the authors' GPT-2 curves (their code): pass them to load_model/adapt
# (final_norm) and to extract (feature_norm)
AUTHORS_GPT2_READOUT = {"final_norm": False, "feature_norm": "hf"}

# logits formed at once when a vocabulary is read (rows x classes): bounds the memory of a language-model
# readout (~64 MB of float32); extraction, evaluation and the losses' fused path all use it
LOGIT_ELEMENTS_PER_CHUNK = 2 ** 24


@dataclass
class Hidden:
    """The tokens after every block of one batch.

    states: (L, B, T, d) outputs of blocks 1..L (raw: no final norm applied).
    mask: (B, T) bool, True at real tokens (False at padding).
    input_ids: (B, T) token ids of text models (None for images).
    num_prefix: number of leading non-content tokens (vision: CLS, distillation, register tokens).
    embedded: (B, T, d) the embedding output ("layer 0": the input of block 1) where the adapter recorded it in
        the same forward (the Hugging Face adapters), else None (see ``LayerAdapter.embedding_output``).
    """

    states: torch.Tensor
    mask: torch.Tensor
    input_ids: torch.Tensor | None = None
    num_prefix: int = 0
    embedded: torch.Tensor | None = None


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
        """The state as a one-layer `Hidden` (states (1, B, T, d)), e.g. for ``adapter.head_inputs``."""
        return Hidden(self.tokens[None], self.mask, self.input_ids, self.num_prefix)


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


def layer_number(layer, num_layers: int) -> int:
    """One 1-based layer number, checked (never optional: a reader always knows which layer it reads)."""
    if isinstance(layer, (list, tuple, range, torch.Tensor)) and not (isinstance(layer, torch.Tensor) and layer.dim() == 0):
        raise ValueError(f"expected one layer number in 1..{num_layers}, got {layer!r}")
    return layer_indices(layer, num_layers)[0] + 1


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def check_upto(upto, num_layers: int) -> int:
    """`upto` of hidden_states: None means L; else a layer number in 1..L."""
    return num_layers if upto is None else layer_number(upto, num_layers)


class _SelfChecked(type):
    """Adapters check themselves once made: ``SomeAdapter(model, ..., check=True)`` (see `layersim.models.selfcheck`)."""

    def __call__(cls, *args, check: bool = True, **kwargs):
        adapter = super().__call__(*args, **kwargs)
        if not isinstance(check, bool):
            raise TypeError(f"check must be True or False, got {check!r}")
        if check:
            adapter.self_check()
        return adapter


class LayerAdapter(metaclass=_SelfChecked):
    """Base class: pooling, targets, head inputs, the reader and fingerprints shared by every adapter.

    A subclass provides ``hidden_states``, ``logits``, ``probe_batch`` (a small input for the self-check) and
    the head: ``head_linear()`` with ``_pre_linear`` when the head ends in one linear layer, else ``_head``;
    ``norm`` for pre-norm models. Its class attributes say how the family reads (``readout_pooling``,
    ``norm_before_pool``, ``has_class_token``, ``vocabulary_readout``).
    """

    has_class_token = True  # the first token is a CLS token (ViT/DeiT, BERT family)
    readout_pooling = "cls"  # the pooling the model's own head reads
    vocabulary_readout = False  # C is a vocabulary: read out per token, keep summaries rather than logits
    norm_before_pool = False  # the head normalises every token, then pools (timm ViTs with avg pooling, no fc_norm)
    has_final_norm = True  # pre-norm model with a final norm (False: post-norm encoders)
    head_tokens = 1  # vectors the head reads per sample (2: a distilled DeiT's class and distillation tokens)
    settable_readout_poolings: tuple = ()  # other poolings the head can be switched to (`set_readout_pooling`)
    modality = "tensor"  # what a batch holds: "image", "text" (texts or token ids), "audio", "tensor" (any other)

    def __init__(self, model: nn.Module, *, name: str | None = None, final_norm: bool = True):
        if not isinstance(final_norm, bool):
            raise TypeError(f"final_norm must be True or False, got {final_norm!r}")
        self.model = model
        self.name = name or type(model).__name__
        self.final_norm = final_norm
        self.num_layers: int = 0
        self.width: int = 0
        self.num_classes: int | None = None
        self._reader = None

    # -- to be provided by subclasses
    def hidden_states(self, batch, upto: int | None = None) -> Hidden:
        """Tokens after blocks 1..upto (default L) of `batch`: Hidden with states (upto, B, T, d)."""
        raise NotImplementedError

    def logits(self, batch) -> torch.Tensor:
        """The model's own output: (B, C) for a classifier, (B, T, V) for a causal LM."""
        raise NotImplementedError

    def run_model(self, batch):
        """The model's own forward on `batch` (its output, whatever it is): what the self-check compares with."""
        return self.logits(batch)

    def final_features(self, hidden: Hidden, batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For a model without a head: (the model's own output features, the same computed from layer L of
        `hidden` with the adapter's final norm), compared by the self-check; None where the adapter does not
        know what the model outputs."""
        return None

    def no_readout_reason(self) -> str:
        """Why a model without a classification head has no readout, and how to get one (for people)."""
        return (f"{self.name} has no classification head (a bare backbone), so there is no last-layer classifier "
                "to read its layers with; features and similarity are shown. Load it with a head (e.g. "
                "load_model(..., num_labels=C) for a text encoder) to see the readout.")

    def probe_batch(self):
        """A small, fixed input the self-check runs (images or token ids; own random generator)."""
        raise NotImplementedError(f"{type(self).__name__} defines no probe_batch(), so it cannot check itself; "
                                  "define one, or make it with check=False (its numbers are then unchecked)")

    def norm(self, h: torch.Tensor) -> torch.Tensor:
        """The model's final norm applied to (..., d) vectors (identity for post-norm encoders)."""
        return h

    def head_linear(self) -> nn.Linear | None:
        """The head's last linear layer when the head is ``head_linear(_pre_linear(norm(v)))``; None otherwise
        (BERT's pooler + classifier, distilled DeiT: then ``_head`` reads)."""
        return None

    def _pre_linear(self, normed: torch.Tensor) -> torch.Tensor:
        """What the head does between the final norm and its last linear layer (nothing, by default)."""
        return normed

    def _head(self, normed: torch.Tensor) -> torch.Tensor:
        """A head that is not one linear layer, on (N, d) normed head inputs -> (N, C)."""
        return self.head_linear()(self._pre_linear(normed))

    def classifier_module(self) -> nn.Module | None:
        """The module of the model's own final classifier (its last linear layer, or the head module)."""
        return self.head_linear()

    def own_exit_heads(self) -> nn.ModuleList | None:
        """Exit heads the model carries itself (our ViT built with ``multi_exit=True``), else None."""
        return None

    def structure(self) -> dict:
        """How this model is read, for people: family, blocks, final norm, head, pooling, pre/post-norm."""
        return {"adapter": type(self).__name__, "blocks": self.num_layers, "width": self.width,
                "classes": self.num_classes,
                "pooling read by the head": self.readout_pooling if self.has_readout else "no head",
                "norm before pooling": self.norm_before_pool,
                "final norm": "yes (pre-norm)" if self.has_final_norm else "none (post-norm)",
                "readout": self.readout_formula()}

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

    def embedding_output(self, hidden: Hidden, batch) -> torch.Tensor:
        """(B, T, d) the embedding output of `batch` ("layer 0": the tokens entering block 1), whose block outputs
        `hidden` were read from it: ``hidden.embedded`` where the forward recorded it, else the embedding run
        alone (``begin(batch)``: no block runs)."""
        if hidden.embedded is not None:
            return hidden.embedded
        try:
            return self.begin(batch).tokens
        except NotImplementedError as e:
            raise NotImplementedError(f"{self.name} ({type(self).__name__}) does not give its embedding output "
                                      "(layer 0): return it as Hidden(..., embedded=...) from hidden_states, or "
                                      "define begin(batch)") from e

    def run_blocks(self, state: BlockState, stop: int) -> BlockState:
        """Run blocks state.layer+1 .. stop (1-based; state.layer <= stop <= L) -> the state after block stop."""
        if not isinstance(state, BlockState):
            raise ValueError(f"run_blocks takes the BlockState of begin(batch), got {type(state).__name__}")
        stop = whole_number(stop, "stop", low=state.layer, high=self.num_layers,
                            what=f"a layer in {state.layer}..{self.num_layers} (the state is after block {state.layer})")
        tokens = state.tokens
        for block in self.block_modules()[state.layer:stop]:
            out = block(tokens, *state.block_args, **state.block_kwargs)
            tokens = out[0] if isinstance(out, (tuple, list)) else out
        return replace(state, tokens=tokens, layer=stop)

    # -- settings and checks
    def settings(self) -> dict:
        """Everything besides the weights that changes what the adapter returns (for cache keys)."""
        out = {"adapter": type(self).__name__, "final_norm": self.final_norm}
        if self.readout_pooling != type(self).readout_pooling:
            out["readout_pooling"] = self.readout_pooling
        return out

    def self_check(self, batch=None) -> None:
        """Check on a probe batch that this adapter reads the model exactly (see `layersim.models.selfcheck`)."""
        from .selfcheck import check_adapter

        check_adapter(self, batch)

    def set_readout_pooling(self, pooling: str, *, check: bool = True) -> "LayerAdapter":
        """Make the head read `pooling` of every layer instead of the model's own pooling (e.g. a sentence
        encoder trained with mean pooling: ``classifier(pooler(mean(h_l)))``); returns the adapter. The
        model's own output (`logits`) then follows the same head, and the self-check runs again."""
        allowed = tuple(dict.fromkeys((type(self).readout_pooling,) + tuple(self.settable_readout_poolings)))
        if pooling not in allowed:
            raise ValueError(f"the head of {self.name} can read pooling {' or '.join(map(repr, allowed))}, not "
                             f"{pooling!r}")
        self.readout_pooling = pooling
        if check:
            self.self_check()
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
        from ..metrics.readout import check_labels

        batch = hidden.states.shape[1]
        where = f"{self.name} has {self.num_classes} classes; does the data set match the model?"
        labels = check_labels(labels, batch, self.num_classes, where=where).to(hidden.states.device)
        if (pooling or self.readout_pooling) == "tokens":  # every token of an input carries the input's label
            return labels.repeat_interleave(self.sample_mask(hidden, "tokens").sum(1))
        return labels

    # -- reading a layer
    def norm_applies(self, layer: int) -> bool:
        """Whether the final norm is applied before the head when reading 1-based `layer`."""
        return self.has_final_norm and (self.final_norm or layer == self.num_layers)

    def head_inputs(self, hidden: Hidden, pooling: str | None = None, layers=None) -> torch.Tensor:
        """(L', n, d): what the head reads of every selected layer (1-based `layers`, default all) for the
        samples of `pooling` (default the readout pooling): the head's own pooling of each layer, and for a
        head that normalises before pooling (``norm_before_pool``) the normalised tokens pooled."""
        index = self._check_hidden(hidden, layers)
        pooling = self.readout_pooling if pooling is None else pooling
        return self._head_vectors(replace(hidden, states=hidden.states[index]), [i + 1 for i in index], pooling)

    def state_head_inputs(self, state: BlockState) -> torch.Tensor:
        """(B, d): what the head reads of a batch run block by block, after block ``state.layer``."""
        return self._head_vectors(state.hidden(), [state.layer], self.readout_pooling)[0]

    def _head_vectors(self, hidden: Hidden, numbers: list, pooling: str) -> torch.Tensor:
        """Head inputs of `hidden`, whose states are the layers `numbers` (1-based), for samples of `pooling`."""
        head_pooling = self.head_pooling(pooling)
        if not self.norm_before_pool:
            return self.pool(hidden, head_pooling)
        return self.pool(self._normed_tokens(hidden, numbers), head_pooling)

    def _normed_tokens(self, hidden: Hidden, numbers: list) -> Hidden:
        """`hidden` (layers `numbers`, 1-based) with the final norm on every token where the head applies it."""
        states = torch.stack([self.norm(s) if self.norm_applies(l) else s for s, l in zip(hidden.states, numbers)])
        return replace(hidden, states=states)

    def head_normed(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        """Head inputs of 1-based `layer` with the final norm applied where the shared head applies it
        (not again when the head inputs are already normalised tokens, ``norm_before_pool``)."""
        return self.norm(vectors) if self.norm_applies(layer) and not self.norm_before_pool else vectors

    def head_pre(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        """The shared head's steps before its last linear layer, on head inputs of 1-based `layer`."""
        return self._pre_linear(self.head_normed(vectors, layer))

    def exit_pre(self, vectors: torch.Tensor, layer: int) -> torch.Tensor:
        """What an exit head of `layer` reads: the head inputs with the final norm when ``final_norm``."""
        normed = self.has_final_norm and self.final_norm and not self.norm_before_pool
        return self.norm(vectors) if normed else vectors

    @property
    def reader(self):
        """The model's own last-layer classifier as a reader of every layer (the logit lens):
        ``adapter.reader(v, layer)`` with v the layer's head inputs (..., d) -> (..., C)."""
        if self._reader is None:
            from .readers import SharedHead

            self._reader = SharedHead(self)
        return self._reader

    def read(self, hidden: Hidden, layers=None, *, reader=None) -> torch.Tensor:
        """(L', n, C): `reader` (default the shared head; an `ExitHeads` or any `Reader`) on every selected
        layer of `hidden` (one row per sample of the readout pooling). For a vocabulary and many tokens read
        in chunks (`layersim.models.readers.read_stats`), as extraction and evaluation do."""
        from .readers import as_reader

        reader = as_reader(self, reader)
        index = self._check_hidden(hidden, layers)
        vectors = self.head_inputs(hidden, layers=[i + 1 for i in index])
        return torch.stack([reader(v, i + 1) for v, i in zip(vectors, index)])

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
        if not self.has_final_norm:
            return "head(h_l) (post-norm: no final norm)"
        head = "head(pool(norm(h_l)))" if self.norm_before_pool else "head(norm(h_l))"
        if self.final_norm:
            return head
        return f"head(h_l) for l < L (final norm skipped), {head.replace('h_l', 'h_L')} for l = L"

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

    def _check_hidden(self, hidden: Hidden, layers) -> list[int]:
        """0-based indices of `layers` after checking that `hidden` holds them."""
        if not isinstance(hidden, Hidden):
            raise ValueError(f"expected the Hidden returned by hidden_states(batch), got {type(hidden).__name__}")
        index = layer_indices(layers, self.num_layers)
        have = hidden.states.shape[0]
        if max(index) >= have:
            raise ValueError(f"these hidden states hold blocks 1..{have} of {self.num_layers}; layer(s) "
                             f"{[i + 1 for i in index]} need hidden_states(batch) with upto >= {max(index) + 1}")
        return index
