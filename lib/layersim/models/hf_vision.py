"""Adapter for Hugging Face vision transformers: ViT, DeiT (with or without its distillation head), Dinov2 (with
or without registers), CLIP's vision tower (with or without its projection) and SigLIP's, bare or with their
classification head (`layersim.models.families.VISION_CLASSES`).

Blocks are read during the model's own forward (`layersim.models.hf_blocks`). ViT, DeiT and Dinov2 normalise the
whole sequence with ``layernorm`` before their head reads it, SigLIP with ``post_layernorm``; CLIP normalises the
pooled class token with ``post_layernorm`` (its pooled output), which ``CLIPVisionModelWithProjection`` projects
with ``visual_projection`` (its ``image_embeds``). The features of every layer are its block outputs; a bare
model's own output (normed tokens, pooled output or image embedding) is what the self-check compares layer L with.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Hidden, LayerAdapter
from .families import VISION_PROJECTIONS, vision_base, vision_head, vision_norm, vision_prefix_tokens
from .hf_blocks import HFBlocks
from .inputs import check_images


class HFVision(HFBlocks, LayerAdapter):
    """Hugging Face ViT / DeiT / Dinov2 / CLIP / SigLIP vision tower. The head of layer l reads the final norm's
    tokens n_l = norm(h_l): ViT and DeiT ``classifier(n_l[CLS])``; a DeiT with teacher the mean of its class and
    distillation classifiers; Dinov2 ``classifier(concat(n_l[CLS], mean(n_l[patches])))`` (patches: after the
    class and register tokens); SigLIP ``classifier(mean(n_l))`` (no class token). A bare backbone (no head)
    gives features only; the self-check then compares layer L with the features the model returns."""

    modality = "image"

    def __init__(self, model: nn.Module, *, name: str | None = None, final_norm: bool = True):
        config = model.config
        super().__init__(model, name=name or getattr(config, "_name_or_path", None) or type(model).__name__,
                         final_norm=final_norm)
        self.head_kind, self.head_formula, self._heads = vision_head(model)
        self._find_blocks(vision_base(model))
        if self._blocks is None:
            raise ValueError(f"could not find the blocks of {type(model).__name__}; subclass "
                             "layersim.models.LayerAdapter for it")
        config = self.base.config  # the vision tower's own config (SigLIP's classifier holds it in vision_config)
        self.num_layers, self.width = len(self._blocks), config.hidden_size
        self.norm_path, self.norm_module, sequence_norm = vision_norm(self.base)
        self.norm_before_pool = sequence_norm  # the model normalises every token, then its head reads them
        self.num_prefix = vision_prefix_tokens(self.base.embeddings)
        self.has_class_token = self.num_prefix > 0
        if self.head_kind == "mean":
            self.readout_pooling = "mean"
        self.head_tokens = 2 if self.head_kind in ("cls+distillation", "cls+mean") else 1
        self.num_classes = self._heads[0].out_features if self.head_kind is not None else None
        self.projection = VISION_PROJECTIONS.get(type(model).__name__)  # (module name, output field) or None
        size = config.image_size
        self.image_shape = (config.num_channels, *((size, size) if isinstance(size, int) else tuple(size)))

    def settings(self) -> dict:
        return {**super().settings(), "model_class": type(self.model).__name__}

    def structure(self) -> dict:
        head = {None: "none (a bare backbone)", "cls": "classifier on the class token",
                "cls+distillation": "cls_classifier and distillation_classifier, averaged",
                "cls+mean": f"classifier on concat(class token, mean of the patch tokens after the {self.num_prefix} "
                            "leading tokens)", "mean": "classifier on the mean of all tokens"}[self.head_kind]
        out = {**super().structure(), "family": self.model.config.model_type, **self.block_structure(),
               "final norm at": f"{self.norm_path} (on "
               + ("every token)" if self.norm_before_pool else "the pooled class token)"),
               "leading tokens": self.num_prefix, "head": head}
        if self.projection:
            out["output"] = (f"{self.own_output()} (the model's {self.projection[1]}, compared with layer L by the "
                             "self-check); the features of every layer are its block outputs, not projected")
        if isinstance(getattr(self.base, "head", None), nn.Module):
            out["pooled output"] = (f"{type(self.base.head).__name__} on the normed tokens (attention pooling, a "
                                    "feature, not a classifier): not applied to the layers")
        return out

    def own_output(self) -> str:
        """What a bare model returns of layer L, as a formula."""
        normed = f"{self.norm_path}(" + ("h_L)" if self.norm_before_pool else "h_L[CLS])")
        return f"{self.projection[0]}({normed})" if self.projection else normed

    def readout_formula(self) -> str:
        if self.head_kind is None:
            return f"no head; the model's output is {self.own_output()}"
        formula = self.head_formula.replace("n_l", f"{self.norm_path}(h_l)")
        return formula + ("" if self.final_norm else f"; {self.norm_path} skipped for l < L")

    def no_readout_reason(self) -> str:
        what = (f" (it returns an image embedding, {self.own_output()}, not a classifier's logits)"
                if self.projection else "")
        return (f"{self.name} is a bare {type(self.model).__name__} without a classification head{what}, so there is "
                "no last-layer classifier to read its layers with; features and similarity are shown. Load it as "
                "*ForImageClassification (e.g. ViTForImageClassification) to see the readout.")

    # -- inputs
    def _images(self, batch) -> torch.Tensor:
        return check_images(batch, self.image_shape, self.dtype, self.device, self.name)

    def probe_batch(self) -> torch.Tensor:
        return torch.randn(2, *self.image_shape, generator=torch.Generator().manual_seed(0))

    def run_model(self, batch):
        return self.model(**self._model_inputs(batch))

    def logits(self, batch) -> torch.Tensor:
        self._require_readout()
        return self.run_model(batch).logits

    def _model_inputs(self, batch) -> dict:
        return {"pixel_values": self._images(batch)}

    def final_features(self, hidden: Hidden, batch):
        if self.projection:  # CLIPVisionModelWithProjection: the projected pooled output, its image_embeds
            module, field = self.projection
            own = getattr(self.run_model(batch), field)
            return getattr(self.model, module)(self.norm(hidden.states[-1][:, 0])), own
        if self.norm_before_pool:
            return super().final_features(hidden, batch)
        own = self.base(**self._model_inputs(batch)).pooler_output  # CLIP: post_layernorm of the class token
        return self.norm(hidden.states[-1][:, 0]), own

    # -- the head
    def norm(self, h):
        return self.norm_module(h)

    def _head_vectors(self, hidden: Hidden, numbers: list, pooling: str) -> torch.Tensor:
        if self.head_tokens == 1:
            return super()._head_vectors(hidden, numbers, pooling)
        normed = self._normed_tokens(hidden, numbers)
        if self.head_kind == "cls+distillation":
            return normed.states[:, :, :2]  # (L', n, 2, d): class and distillation tokens
        return torch.stack([normed.states[:, :, 0], self.pool(normed, "mean")], dim=2)  # class token, patch mean

    def head_linear(self):
        return self._heads[0] if self.head_kind in ("cls", "mean") else None

    def classifier_module(self):
        return self._heads[0] if self.head_kind is not None else None

    def _head(self, normed):
        if self.head_kind == "cls+distillation":  # as the model in eval: the mean of its two heads
            return (self._heads[0](normed[..., 0, :]) + self._heads[1](normed[..., 1, :])) / 2
        if self.head_kind == "cls+mean":
            return self._heads[0](normed.flatten(-2))
        return self._heads[0](normed)
