"""Model surgery: where a family keeps its blocks, final norm and head. The one place that knows families.

Free functions over a model, in the manner of tuned-lens's ``model_surgery``. What they find is only a
claim: every adapter built on them is checked against the model's own output when it is made
(`layersim.models.selfcheck`), so a family these lookups get wrong is refused, not read wrongly.

Hugging Face families (by where the base model keeps them):
- blocks: ``layers`` (Llama, Mistral, Qwen, Phi-3, Gemma, GPT-NeoX, ModernBERT), ``h`` (GPT-2, GPT-J, Bloom,
  Falcon), ``blocks`` (MPT), ``decoder.layers`` (OPT), ``encoder.layer`` (BERT, RoBERTa, ELECTRA, XLM-R),
  ``transformer.layer`` (DistilBERT), ``encoder.layers``;
- final norm (pre-norm models): ``ln_f``, ``norm``, ``norm_f``, ``final_layernorm``, ``final_layer_norm``,
  ``final_norm``, ``decoder.final_layer_norm`` (OPT), and for pre-norm encoders ``LayerNorm``
  (RoBERTa-PreLayerNorm) and ``encoder.LayerNorm`` (XLM-RoBERTa-XL). Post-norm encoders (BERT family) have none;
- between the final norm and the LM head: OPT's ``decoder.project_out`` where it exists;
- vision transformers (`VISION_CLASSES`): blocks at ``layers`` (ViT, DeiT), ``encoder.layer`` (Dinov2, with
  or without registers), ``encoder.layers`` (CLIP, SigLIP); final norm ``layernorm`` on the whole sequence (ViT,
  DeiT, Dinov2), ``post_layernorm`` on the pooled class token (CLIP) or, without a class token, on the whole
  sequence (SigLIP); leading tokens: the class token, DeiT's distillation token, Dinov2's register tokens
  (after the class token); CLIP's ``visual_projection`` of the pooled output (`VISION_PROJECTIONS`);
- encoder stacks of encoder-decoder models (`ENCODER_STACKS`): T5's ``encoder.block`` and
  ``encoder.final_layer_norm``, Whisper's ``encoder.layers`` and ``encoder.layer_norm``; audio classifiers
  (`AUDIO_CLASSIFIERS`): Whisper's encoder, wav2vec 2.0's and HuBERT's ``encoder.layers`` (final norm
  ``encoder.layer_norm`` after block L where ``do_stable_layer_norm``, else post-norm), with ``projector`` and
  ``classifier`` (`audio_head`);
- what runs before block 1 (`BLOCK_ENTRY`): written out for GPT-2, the Llama family, GPT-NeoX and the BERT family, whose
  blocks layersim then runs in its own explicit loop (`layersim.models.decoder`, `layersim.models.text`); every
  other family is read through the model's own forward, with hooks on its blocks (`layersim.models.hf_blocks`).
"""
from __future__ import annotations

import torch
import torch.nn as nn

BLOCK_PATHS = ("layers", "h", "blocks", "decoder.layers", "encoder.layer", "encoder.layers", "transformer.layer",
               "transformer.h", "layer", "block")
DECODER_NORM_PATHS = ("ln_f", "norm", "norm_f", "final_layernorm", "final_layer_norm", "final_norm",
                      "decoder.final_layer_norm")
ENCODER_NORM_PATHS = ("final_norm", "LayerNorm", "encoder.LayerNorm", "encoder.final_layer_norm")


# model_type -> how the base model prepares block 1's input and what every block takes besides it:
# "learned": token + learned position embeddings, dropout, a causal mask (GPT-2);
# "rotary": token embeddings, a causal mask (sliding-window where the config says so), rotary position
#   embeddings handed to every block (Llama, SmolLM2, Mistral, Qwen2, Qwen3, Gemma (its embedding scales
#   itself), OLMo, Phi-3);
# "neox": as "rotary", with GPT-NeoX's names (embed_in, emb_dropout; the cache is passed as layer_past);
# "bert": the embeddings module (token, position, token type; ELECTRA's projection after it), a padding mask.
BLOCK_ENTRY = {"gpt2": "learned", "llama": "rotary", "mistral": "rotary", "qwen2": "rotary", "qwen3": "rotary",
               "gemma": "rotary", "olmo": "rotary", "phi3": "rotary", "gpt_neox": "neox",
               "bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert", "camembert": "bert"}


def block_entry(config) -> str | None:
    """The `BLOCK_ENTRY` of a Hugging Face config, or None (the family is read through its own forward).
    None too where the blocks get different masks (`per_layer_attention`) or a BERT-family model is a decoder."""
    entry = BLOCK_ENTRY.get(getattr(config, "model_type", None))
    if entry is None or per_layer_attention(config) or (entry == "bert" and getattr(config, "is_decoder", False)):
        return None
    return entry


def attention_window(config) -> int | None:
    """The sliding attention window that every block of a decoder uses, or None for full causal attention
    (Mistral: ``sliding_window`` on every layer; Qwen2/Qwen3: a window only where ``layer_types`` say so)."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None and set(types) != {"sliding_attention"}:
        return None
    return window


def get_path(module: nn.Module, path: str):
    """The attribute at dotted `path` of `module`, or None."""
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def find_blocks(base: nn.Module) -> tuple[str, nn.ModuleList] | tuple[None, None]:
    """(path, ModuleList) of the transformer blocks of a Hugging Face base model, or (None, None)."""
    for path in BLOCK_PATHS:
        found = get_path(base, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path, found
    return None, None


def find_final_norm(base: nn.Module, *, encoder: bool) -> tuple[str, nn.Module] | tuple[None, None]:
    """(path, module) of the final norm applied after the last block, or (None, None) (post-norm)."""
    for path in ENCODER_NORM_PATHS if encoder else DECODER_NORM_PATHS:
        found = get_path(base, path)
        if isinstance(found, nn.Module) and not isinstance(found, (nn.ModuleList, nn.Identity)):
            return path, found
    return None, None


def find_projection(base: nn.Module) -> tuple[str, nn.Module] | tuple[None, None]:
    """A projection between the final norm and the LM head (OPT's ``decoder.project_out``), or (None, None)."""
    found = get_path(base, "decoder.project_out")
    return ("decoder.project_out", found) if isinstance(found, nn.Module) else (None, None)


# Hugging Face vision classes read, by class name: what their head reads of the final norm's tokens
# ("cls": classifier(norm(h)[CLS]); "cls+distillation": the mean of two classifiers on the class and
# distillation tokens; "cls+mean": classifier(concat(CLS, mean of the patch tokens)); None: no head)
VISION_CLASSES = {"ViTModel": None, "ViTForImageClassification": "cls",
                  "DeiTModel": None, "DeiTForImageClassification": "cls",
                  "DeiTForImageClassificationWithTeacher": "cls+distillation",
                  "Dinov2Model": None, "Dinov2ForImageClassification": "cls+mean",
                  "Dinov2WithRegistersModel": None, "Dinov2WithRegistersForImageClassification": "cls+mean",
                  "CLIPVisionModel": None, "CLIPVisionModelWithProjection": None,
                  "SiglipVisionModel": None, "SiglipForImageClassification": "mean"}
# bare vision classes that return a projection of their pooled output: class -> (the projection, the output field)
VISION_PROJECTIONS = {"CLIPVisionModelWithProjection": ("visual_projection", "image_embeds")}
# the final norm of a vision transformer: (path, True when it normalises the sequence, False the pooled class
# token); ``post_layernorm`` normalises the pooled class token where there is one (CLIP), else every token (SigLIP)
VISION_NORMS = (("layernorm", True), ("post_layernorm", False))
# encoder-decoder classes whose encoder stack (``get_encoder()``) is read: class name -> (the stack's final
# norm, what it reads)
ENCODER_STACKS = {"T5EncoderModel": ("final_layer_norm", "text"), "T5Model": ("final_layer_norm", "text"),
                  "T5ForConditionalGeneration": ("final_layer_norm", "text"),
                  "WhisperModel": ("layer_norm", "audio"), "WhisperForConditionalGeneration": ("layer_norm", "audio")}
# audio classifiers read with their head on every layer (`audio_head`: classifier(mean over frames of
# projector(n_l)), n_l the layer's frames after the encoder's final norm where there is one): class name -> (what
# they read, the final norm in the module whose forward runs the blocks); "log-mel": Whisper's encoder stack,
# "waveform": wav2vec 2.0 / HuBERT (their base model: convolutional feature encoder, then the blocks; the norm
# follows block L only where ``do_stable_layer_norm``, else it runs before block 1 and the blocks are post-norm)
AUDIO_CLASSIFIERS = {"WhisperForAudioClassification": ("log-mel", "layer_norm"),
                     "Wav2Vec2ForSequenceClassification": ("waveform", "encoder.layer_norm"),
                     "HubertForSequenceClassification": ("waveform", "encoder.layer_norm")}


def audio_head(model: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """(projector, classifier) of an audio classifier of `AUDIO_CLASSIFIERS`, whose logits are
    ``classifier(mean over frames of projector(h))``; raises ValueError where the model mixes its layers
    (``use_weighted_layer_sum``: its head reads a learned mixture of every layer, not one layer)."""
    name = type(model).__name__
    if getattr(model.config, "use_weighted_layer_sum", False):
        raise ValueError(f"{name} is configured with use_weighted_layer_sum=True: its head reads a softmax-weighted "
                         "sum of every layer's hidden states, not the last layer, so no single layer is what it reads "
                         "and the last-layer classifier cannot be applied to each layer; layersim reads this model "
                         "with use_weighted_layer_sum=False only (to read the mixture, subclass "
                         "layersim.models.LayerAdapter with a head that takes the mixture weights)")
    projector, classifier = getattr(model, "projector", None), getattr(model, "classifier", None)
    if not (isinstance(projector, nn.Linear) and isinstance(classifier, nn.Linear)):
        raise ValueError(f"{name} has no linear projector and classifier: subclass layersim.models.LayerAdapter")
    return projector, classifier


def vision_head(model: nn.Module):
    """How the head of a Hugging Face vision transformer reads: (kind, formula, linear layers) with kind a value
    of `VISION_CLASSES` (None: no head); raises ValueError for a class not in the table."""
    name = type(model).__name__
    if name not in VISION_CLASSES:
        known = ", ".join(VISION_CLASSES)
        raise ValueError(f"don't know how to read the layers of {name} ({model.config.model_type}): the Hugging Face "
                         f"vision classes read are {known}; for another, use timm's ViT/DeiT or subclass "
                         "layersim.models.LayerAdapter (README, 'Your own model')")
    kind = VISION_CLASSES[name]
    if kind == "cls+distillation":
        heads = (model.cls_classifier, model.distillation_classifier)
        formula = "(cls_classifier(n_l[CLS]) + distillation_classifier(n_l[DIST])) / 2"
    else:
        heads = (getattr(model, "classifier", None),)
        formula = {"cls": "classifier(n_l[CLS])", "cls+mean": "classifier(concat(n_l[CLS], mean(n_l[patches])))",
                   "mean": "classifier(mean(n_l))", None: None}[kind]
    if kind is not None and not all(isinstance(h, nn.Linear) for h in heads):
        return None, None, ()  # num_labels=0: the classifier is an identity, there is no head
    return kind, formula, heads


def vision_base(model: nn.Module) -> nn.Module:
    """The module of a Hugging Face vision model that holds its embeddings, blocks and final norm: the base model,
    or the ``vision_model`` of a classifier whose base model is itself (SigLIP's)."""
    base = model.base_model
    return base if hasattr(base, "embeddings") else getattr(model, "vision_model", base)


def vision_norm(base: nn.Module) -> tuple[str, nn.Module, bool]:
    """(path, module, normalises the sequence) of a Hugging Face vision transformer's final norm."""
    for path, sequence in VISION_NORMS:
        found = get_path(base, path)
        if isinstance(found, nn.Module):
            return path, found, sequence or vision_prefix_tokens(base.embeddings) == 0
    raise ValueError(f"{type(base).__name__} has none of the final norms {[p for p, _ in VISION_NORMS]}; subclass "
                     "layersim.models.LayerAdapter for it")


def vision_prefix_tokens(embeddings: nn.Module) -> int:
    """Leading non-patch tokens of a vision transformer's embedding: class, distillation and register tokens."""
    count = int(getattr(embeddings, "cls_token", None) is not None or getattr(embeddings, "class_embedding", None)
                is not None)
    count += int(getattr(embeddings, "distillation_token", None) is not None)
    registers = getattr(embeddings, "register_tokens", None)
    return count + (registers.shape[1] if isinstance(registers, torch.Tensor) else 0)


def logit_softcap(config) -> float | None:
    """The cap of Gemma-2-style logit soft-capping (logits = cap * tanh(logits / cap) after the LM head), or None."""
    cap = getattr(config, "final_logit_softcapping", None)
    return None if cap in (None, 0) else float(cap)


def logit_rescaling(config) -> str | None:
    """A description of what the model does to its logits after the LM head other than soft-capping (which
    `logit_softcap` gives and the causal-LM reader reproduces), or None when nothing."""
    for name in ("logit_scale", "output_multiplier_scale", "logits_scaling"):
        value = getattr(config, name, None)
        if value not in (None, 1, 1.0):
            return f"{name}={value}"
    return None


def per_layer_attention(config) -> bool:
    """True when blocks get different attention masks (sliding windows on some layers): such blocks cannot be
    stepped with the arguments recorded at block 1."""
    types = getattr(config, "layer_types", None)
    return bool(types) and len(set(types)) > 1


def find_encoder_head(model: nn.Module):
    """The sequence-classification head of a Hugging Face encoder as ``(function (N, d) -> (N, C), formula,
    pooling)``; (None, None, None) when the model has no head. The function reads one vector per input (the
    [CLS] vector, or the pooled vector of `pooling`)."""
    classifier = getattr(model, "classifier", None)
    if classifier is None:
        return None, None, None
    base = model.base_model
    pooler = getattr(base, "pooler", None) or getattr(model, "pooler", None)
    pre = getattr(model, "pre_classifier", None)
    activation = getattr(base, "pooler_activation", None)
    mlm_style_head = getattr(model, "head", None)
    if pooler is not None and activation is not None and isinstance(classifier, nn.Linear):  # ALBERT
        return (lambda v: classifier(activation(pooler(v)))), "classifier(tanh(pooler(h_l[CLS])))", "cls"
    if pooler is not None and isinstance(classifier, nn.Linear):  # BERT, MiniLM (pooler: dense + tanh on [CLS])
        return (lambda v: classifier(pooler(v[:, None, :]))), "classifier(pooler(h_l[CLS]))", "cls"
    if pre is not None and isinstance(classifier, nn.Linear):  # DistilBERT
        return (lambda v: classifier(torch.relu(pre(v)))), "classifier(relu(pre_classifier(h_l[CLS])))", "cls"
    if mlm_style_head is not None and isinstance(classifier, nn.Linear):  # ModernBERT
        pooling = getattr(model.config, "classifier_pooling", "cls")
        drop = getattr(model, "drop", nn.Identity())
        return (lambda v: classifier(drop(mlm_style_head(v)))), f"classifier(head({pooling}(h_l)))", pooling
    if not isinstance(classifier, nn.Linear):  # RoBERTa, ELECTRA: a head module reading the sequence at [CLS]
        return (lambda v: classifier(v[:, None, :])), f"{type(classifier).__name__}(h_l[CLS])", "cls"
    return None, "a linear 'classifier' without a pooler", None


def is_encoder_type(model_type: str) -> bool:
    """True for Hugging Face model types that are bidirectional encoders (they have a masked-LM head)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def is_causal_lm_type(model_type: str) -> bool:
    """True for Hugging Face model types that have a causal-LM head class (GPT-2, Llama, ...)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def is_seq2seq_type(model_type: str) -> bool:
    """True for Hugging Face model types of encoder-decoder families (T5, BART, ...), even for their encoder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
