"""Parameters saved by one shared classifier against one classifier per exit.

A multi-exit model with a separate linear head (d -> C, with bias) after each of blocks 1..L-1 carries
(L - 1)(C d + C) parameters more than the same backbone read by its own last-layer head at every layer
(the paper's aligned model). `parameter_savings` computes this from the model itself (L, d, C and the
parameter count of the model, tied weights counted once); `savings_table` builds DeiT-S, DeiT-B,
BERT-Base and GPT-2 from their configurations on the meta device (no weights, no download) and sets
their savings beside the authors' figures.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import pandas as pd
import torch
import torch.nn as nn

from layersim.models import adapt
from layersim.validate import whole_number

__all__ = ["ParameterSavings", "parameter_savings", "savings_table", "AUTHORS_SAVINGS", "NOMINAL_SIZES"]

# the authors' figures: saving as a share of the multi-exit model's parameters (PAPER.md)
AUTHORS_SAVINGS = {"DeiT-S": 0.161, "DeiT-B": 0.089, "GPT-2": 0.784}
# backbone sizes as the models' papers state them (DeiT: Touvron et al. 2021, Table 1; BERT-Base: Devlin
# et al. 2019; GPT-2 small: Radford et al. 2019, Table 2, "117M", a count later corrected to 124M)
NOMINAL_SIZES = {"DeiT-S": 22e6, "DeiT-B": 86e6, "BERT-Base": 110e6, "GPT-2": 117e6}


@dataclass
class ParameterSavings:
    """Parameter counts of one shared classifier (the model as it is) against L classifiers.

    shared_params: parameters of the model with its own head only (exit heads it carries left out; tied
        weights counted once). extra_params: the L-1 heads a multi-exit model adds, (L-1)(C d + C).
    multi_exit_params = shared_params + extra_params.
    saving: extra_params / multi_exit_params, the share of the multi-exit model that one shared head saves.
    head_tied: the model's own head shares its weight with the input embedding (GPT-2).
    """

    model: str
    num_layers: int
    width: int
    num_classes: int
    shared_params: int
    extra_params: int
    multi_exit_params: int
    saving: float
    head_params: int
    head_tied: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _unique_params(module: nn.Module) -> dict:
    return {id(p): p for p in module.parameters()}  # parameters() already skips shared (tied) tensors


def parameter_savings(model, *, num_classes: Optional[int] = None, name: Optional[str] = None) -> ParameterSavings:
    """Parameters saved by reading every layer with the model's own head instead of adding a head per exit.

    model: our ViT, a timm ViT/DeiT, a Hugging Face encoder or causal LM (weights may be on the meta
    device), or their adapter. num_classes: C, when the model has no classification head of its own.
    The extra heads are built (on the meta device, no memory) as L-1 ``nn.Linear(d, C)`` and counted.
    """
    adapter = adapt(model)
    classes = num_classes if num_classes is not None else adapter.num_classes
    if classes is None:
        raise ValueError(f"{adapter.name} has no classification head, so the number of classes C is unknown; pass "
                         "num_classes=C (or load the model with a head, e.g. load_model(..., num_labels=2))")
    classes = whole_number(classes, "num_classes", low=1)
    L, d = adapter.num_layers, adapter.width
    params = _unique_params(adapter.model)
    own_exits = adapter.own_exit_heads()
    if own_exits is not None:
        for p in own_exits.parameters():
            params.pop(id(p), None)
    shared = sum(p.numel() for p in params.values())
    with torch.device("meta"):
        extra_heads = nn.ModuleList(nn.Linear(d, classes) for _ in range(L - 1))
    extra = sum(p.numel() for p in extra_heads.parameters())
    head, tied = _own_head(adapter)
    head_params = sum(p.numel() for p in head.parameters()) if head is not None else 0
    return ParameterSavings(name or adapter.name, L, d, classes, shared, extra, shared + extra,
                            extra / (shared + extra), head_params, tied)


def _own_head(adapter):
    """The model's own final classifier (module) and whether its weight is tied to the input embedding."""
    head = adapter.classifier_module()
    model = adapter.model
    tied = False
    if head is not None and hasattr(model, "get_input_embeddings"):
        try:
            embedding = model.get_input_embeddings()
        except (NotImplementedError, AttributeError):
            embedding = None
        tied = embedding is not None and getattr(head, "weight", None) is getattr(embedding, "weight", False)
    return head, tied


def _meta_models():
    """DeiT-S, DeiT-B (1,000 classes), BERT-Base (2 classes), GPT-2 small: (name, model) built on meta."""
    import timm
    from transformers import AutoConfig, AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        yield "DeiT-S", timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=1000)
        yield "DeiT-B", timm.create_model("deit_base_patch16_224", pretrained=False, num_classes=1000)
        bert = AutoConfig.for_model("bert", num_labels=2)  # defaults = BERT-Base (12 x 768, vocabulary 30,522)
        yield "BERT-Base", AutoModelForSequenceClassification.from_config(bert)
        yield "GPT-2", GPT2LMHeadModel(GPT2Config())  # defaults = GPT-2 small (12 x 768, vocabulary 50,257)


def savings_table() -> pd.DataFrame:
    """Savings of one shared head for DeiT-S, DeiT-B, BERT-Base and GPT-2, built from their configurations
    on the meta device, against the authors' figures.

    Columns: model, L, d, C, shared_params, extra_params, multi_exit_params, saving (counted),
    saving_nominal (the same extra over the backbone size the models' papers state: 22M, 86M, 110M,
    117M), saving_untied_head (GPT-2: its head counted apart from the embedding), authors.
    """
    rows = []
    for name, model in _meta_models():
        s = parameter_savings(model, name=name)
        nominal = NOMINAL_SIZES[name]
        untied = s.shared_params + (s.head_params if s.head_tied else 0)
        rows.append({"model": name, "L": s.num_layers, "d": s.width, "C": s.num_classes,
                     "shared_params": s.shared_params, "extra_params": s.extra_params,
                     "multi_exit_params": s.multi_exit_params, "saving": s.saving,
                     "saving_nominal": s.extra_params / (nominal + s.extra_params),
                     "saving_untied_head": s.extra_params / (untied + s.extra_params),
                     "head_tied": s.head_tied, "authors": AUTHORS_SAVINGS.get(name)})
    return pd.DataFrame(rows)
