"""Audio classifiers read with their own head at every layer: Whisper's (``WhisperForAudioClassification``, log-mel
features) and wav2vec 2.0's and HuBERT's (``Wav2Vec2ForSequenceClassification``, ``HubertForSequenceClassification``,
raw waveforms) (`layersim.models.families.AUDIO_CLASSIFIERS`).

Their heads are the same: logits = classifier(mean over frames of projector(n_L)), n_L the last layer's frames
after the encoder's final norm where it has one. The projector is linear, so the mean may come first: layer l is
read as classifier(projector(mean(n_l))) (checked against the model's logits when the adapter is made). A model
that mixes its layers (``use_weighted_layer_sum``) is refused (`layersim.models.families.audio_head`). The blocks
are read during the model's own forward (`layersim.models.hf_blocks`): for wav2vec 2.0 and HuBERT that is the
convolutional feature encoder, the feature projection and the positional convolution, then the blocks.
"""
from __future__ import annotations

import math

import torch

from .base import LayerAdapter
from .families import AUDIO_CLASSIFIERS, audio_head, get_path
from .hf_blocks import HFBlocks
from .inputs import check_float_input
from .stacks import WhisperEncoderStack


class _AudioHead:
    """What the audio classifiers share: the model's projector and classifier on the mean of the normed frames."""

    modality = "audio"
    has_class_token = False
    readout_pooling = "mean"
    norm_before_pool = True  # the head normalises every frame (where there is a final norm), then averages them

    def _take_head(self, model) -> None:
        self.projector, self.classifier = audio_head(model)
        self.num_classes = self.classifier.out_features

    def run_model(self, batch):
        return self.model(**self._model_inputs(batch))

    def logits(self, batch) -> torch.Tensor:
        return self.run_model(batch).logits

    def head_linear(self):
        return self.classifier

    def _pre_linear(self, normed: torch.Tensor) -> torch.Tensor:
        return self.projector(normed)

    def head_structure(self) -> dict:
        frames = "frames after the final norm" if self.has_final_norm else "frames"
        return {"head": f"classifier(projector(.)) on the mean over all {frames} (the model averages "
                        "projector(frames); the projector is linear, so both are equal)"}

    def readout_formula(self) -> str:
        normed = f"{self.norm_path}(h_l)" if self.has_final_norm else "h_l"
        formula = f"classifier(projector(mean_frames({normed})))"
        skipped = self.has_final_norm and not self.final_norm
        return formula + (f"; {self.norm_path} skipped for l < L" if skipped else "")


class WhisperAudioClassifier(_AudioHead, WhisperEncoderStack):
    """``WhisperForAudioClassification``: Whisper's encoder stack (as `WhisperEncoderStack`: (N, mel bins, frames)
    log-mel features) with the model's head at every layer, ``classifier(projector(mean(layer_norm(h_l))))``."""

    def __init__(self, model, *, name: str | None = None, final_norm: bool = True):
        super().__init__(model, name=name, final_norm=final_norm)
        self._take_head(model)

    def structure(self) -> dict:
        return {**super().structure(), "read": f"the encoder of {type(self.model).__name__} with its head",
                **self.head_structure()}


class WaveformClassifier(_AudioHead, HFBlocks, LayerAdapter):
    """``Wav2Vec2ForSequenceClassification`` / ``HubertForSequenceClassification``: a batch is an (N, samples) float
    tensor of raw waveforms (a feature extractor's ``input_values``, normalised as the model was trained), all of
    one length: no attention mask is given, so the model and its reading average every frame. The blocks are
    pre-norm with the encoder's ``layer_norm`` after block L where ``do_stable_layer_norm`` (the large models),
    else post-norm (that norm runs before block 1): no final norm."""

    input_name = "waveforms"

    def __init__(self, model, *, name: str | None = None, final_norm: bool = True):
        config = model.config
        super().__init__(model, name=name or getattr(config, "_name_or_path", None) or type(model).__name__,
                         final_norm=final_norm)
        self._take_head(model)
        self._find_blocks(model.base_model)
        if self._blocks is None:
            raise ValueError(f"could not find the blocks of {type(model).__name__}; subclass "
                             "layersim.models.LayerAdapter for it")
        self.num_layers, self.width = len(self._blocks), config.hidden_size
        self.has_final_norm = bool(getattr(config, "do_stable_layer_norm", False))
        self.norm_path = AUDIO_CLASSIFIERS[type(model).__name__][1]
        self.norm_module = get_path(self.base, self.norm_path)
        self.input_shape = (None,)
        # the shortest waveform giving one frame (the receptive field of the convolutions), and 8 frames (the probe)
        kernels, strides = config.conv_kernel, config.conv_stride
        self.min_samples = 1 + sum((k - 1) * math.prod(strides[:i]) for i, k in enumerate(kernels))
        self.probe_samples = self.min_samples + 7 * math.prod(strides)

    def settings(self) -> dict:
        return {**super().settings(), "model_class": type(self.model).__name__}

    def norm(self, h):
        return self.norm_module(h) if self.has_final_norm else h

    def inputs_wanted(self) -> str:
        """What a batch must be, for people (the report's messages)."""
        return (f"an (N, samples) float tensor of raw waveforms, all of one length of at least {self.min_samples} "
                "samples (a feature extractor's input_values, without padding)")

    def _model_inputs(self, batch) -> dict:
        x = check_float_input(batch, self.input_shape, self.dtype, self.device, self.name, what=self.input_name,
                              dims="samples")
        if x.shape[1] < self.min_samples:
            raise ValueError(f"{self.name} reads waveforms of at least {self.min_samples} samples (the receptive field "
                             f"of its convolutional feature encoder), got {x.shape[1]}")
        return {"input_values": x}

    def probe_batch(self) -> torch.Tensor:
        return torch.randn(2, self.probe_samples, generator=torch.Generator().manual_seed(0))

    def structure(self) -> dict:
        norm = (f"{self.norm_path}, after block L (pre-norm blocks)" if self.has_final_norm else
                f"none (post-norm blocks; {self.norm_path} runs before block 1)")
        return {**super().structure(), "family": self.model.config.model_type, **self.block_structure(),
                "final norm at": norm, "attention mask": "none: every frame is averaged, as the model does without one",
                **self.head_structure()}
