"""Adapters for the encoder stack of an encoder-decoder model: T5's encoder (text) and Whisper's encoder (audio;
with a head, ``WhisperForAudioClassification``, in `layersim.models.audio`).

Given a whole model (``T5ForConditionalGeneration``, ``T5Model``, ``WhisperForConditionalGeneration``,
``WhisperModel``) or the encoder alone (``T5EncoderModel``), they read ``model.get_encoder()``: its blocks during
its own forward (`layersim.models.hf_blocks`), features and similarity only (the decoder, not a classifier,
reads the encoder, so there is no readout). Layer l is the raw output of block l; the stack's final norm (T5
``final_layer_norm``, Whisper ``layer_norm``) follows block L, as in the pre-norm text encoders: the features
take it per ``feature_norm`` (`layersim.extract`), and the self-check compares it on layer L with the encoder's
own ``last_hidden_state``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import LayerAdapter
from .families import AUDIO_CLASSIFIERS, ENCODER_STACKS
from .hf_blocks import HFBlocks
from .inputs import check_float_input
from .text import _HFText


class _EncoderStack:
    """What the encoder stacks share: the encoder as the module run, its final norm, no head."""

    has_class_token = False

    def _base_module(self, model) -> nn.Module:
        encoder = model.get_encoder()
        name = type(model).__name__
        norm_path = ENCODER_STACKS[name][0] if name in ENCODER_STACKS else AUDIO_CLASSIFIERS[name][1]
        self.norm_path, self.norm_module = norm_path, getattr(encoder, norm_path)
        return encoder

    def norm(self, h):
        return self.norm_module(h)

    def run_model(self, batch):
        return self.base(**self._model_inputs(batch), **self.call_kwargs)

    def structure(self) -> dict:
        whole = type(self.model).__name__
        has_decoder = any(name.split(".")[-1] == "decoder" for name, _ in self.model.named_modules())
        return {**super().structure(), "family": self.model.config.model_type, **self.block_structure(),
                "read": f"the encoder stack of {whole}" + (" (its decoder is not read)" if has_decoder else ""),
                "final norm at": f"{type(self.base).__name__}.{self.norm_path}, after block L (layer l: the raw "
                                 "output of block l)", "head": "none (the decoder reads the encoder)"}

    def readout_formula(self) -> str:
        return f"no head; the encoder's output is {self.norm_path}(h_L)"

    def no_readout_reason(self) -> str:
        return (f"{self.name} is read as the encoder stack of an encoder-decoder model "
                f"({self.model.config.model_type}): its decoder, not a classifier, reads it, so there is no last-layer "
                "classifier to read its layers with; features and similarity are shown.")


class T5EncoderStack(_EncoderStack, _HFText):
    """The encoder stack of a T5 model (texts, a list of pairs or a tokenised dict, as the text encoders)."""

    def begin(self, batch):
        raise NotImplementedError(f"{self.name}: T5's first block computes the relative position bias that every "
                                  "later block receives, so its blocks are not stepped one by one; for a fixed "
                                  "layer use hidden_states(batch, upto=l)")


class WhisperEncoderStack(_EncoderStack, HFBlocks, LayerAdapter):
    """The encoder stack of a Whisper model. A batch is an (N, num_mel_bins, frames) float tensor of log-mel
    features (a WhisperFeatureExtractor's ``input_features``); frames = 2 * max_source_positions."""

    modality = "audio"
    input_name = "log-mel features"

    def __init__(self, model, *, name: str | None = None, final_norm: bool = True):
        config = model.config
        super().__init__(model, name=name or getattr(config, "_name_or_path", None) or type(model).__name__,
                         final_norm=final_norm)
        self._find_blocks(self._base_module(model))
        self.num_layers, self.width = config.encoder_layers, config.d_model
        self.input_shape = (config.num_mel_bins, 2 * config.max_source_positions)

    def settings(self) -> dict:
        return {**super().settings(), "model_class": type(self.model).__name__}

    def inputs_wanted(self) -> str:
        """What a batch must be, for people (the report's messages)."""
        mel, frames = self.input_shape
        return (f"an (N, {mel}, {frames}) float tensor of log-mel features (a WhisperFeatureExtractor's "
                f"input_features, padded to {frames} frames)")

    def _model_inputs(self, batch) -> dict:
        return {"input_features": check_float_input(batch, self.input_shape, self.dtype, self.device, self.name,
                                                    what=self.input_name, dims="mel bins, frames")}

    def probe_batch(self) -> torch.Tensor:
        return torch.randn(2, *self.input_shape, generator=torch.Generator().manual_seed(0))
