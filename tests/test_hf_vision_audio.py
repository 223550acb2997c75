"""Hugging Face vision towers beyond ViT/DeiT/Dinov2/CLIP (Dinov2 with registers, CLIP with its projection, SigLIP)
and audio classifiers (Whisper's, wav2vec 2.0's, HuBERT's): every layer read with the model's own head, computed
here from the layers independently of the adapter's head, and the adapter refused where it assumes the wrong
tokens, norm or output. Tiny models from configs, their norms randomised (a fresh LayerNorm would hide a misplaced
norm).
"""
import pytest
import torch
import transformers

from layersim.models import (HFVision, SelfCheckError, WaveformClassifier, WhisperAudioClassifier, adapt,
                             load_model)
from test_selfcheck import randomize_norms

transformers.logging.set_verbosity_error()
VIT = dict(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=32)
IMAGES = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
WHISPER = dict(num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=8,
               classifier_proj_size=8, num_labels=3)
MELS = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(2))
WAV2VEC2 = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
                conv_stride=(4, 2), conv_kernel=(8, 4), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                classifier_proj_size=8, num_labels=3)
WAVES = torch.randn(3, 120, generator=torch.Generator().manual_seed(4))


def assuming(cls, **attrs):
    """`cls` with `attrs` set once made (a wrong assumption about the model), before its self-check runs."""
    class Assuming(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.__dict__.update(attrs)

    return Assuming


def tiny(cls, config):
    torch.manual_seed(0)
    return randomize_norms(cls(config))


def dinov2_registers(head=True):
    config = transformers.Dinov2WithRegistersConfig(**VIT, num_register_tokens=2, num_labels=3)
    model = tiny(transformers.Dinov2WithRegistersForImageClassification if head else
                 transformers.Dinov2WithRegistersModel, config)
    base = model.base_model
    with torch.no_grad():  # register tokens unlike the patches (they start at zero)
        base.embeddings.register_tokens.normal_(generator=torch.Generator().manual_seed(3))
    return model


def test_dinov2_with_registers_reads_the_class_token_and_the_patches_after_the_registers():
    """Tokens are [CLS, 2 registers, 16 patches]; the head reads concat(n_l[CLS], mean(n_l[3:])) at every layer.
    Counting the registers as patches (one leading token) changes layer L, and the self-check refuses it."""
    model = dinov2_registers()
    adapter = adapt(model)
    assert adapter.num_prefix == 3 and "after the 3 leading tokens" in adapter.structure()["head"]
    with torch.no_grad():
        hidden = adapter.hidden_states(IMAGES)
        read = adapter.read(hidden)
        own = model(IMAGES, output_hidden_states=True)
        for l in range(1, 3):
            n = model.base_model.layernorm(own.hidden_states[l])
            expected = model.classifier(torch.cat([n[:, 0], n[:, 3:].mean(1)], dim=-1))
            assert torch.allclose(read[l - 1], expected, atol=1e-5)
        assert torch.allclose(read[-1], own.logits, atol=1e-5)
    with pytest.raises(SelfCheckError, match="layer L is the model's prediction"):
        assuming(HFVision, num_prefix=1)(model)  # the mean then takes the registers with the patches
    bare = adapt(dinov2_registers(head=False))
    assert not bare.has_readout and bare.num_prefix == 3 and "bare Dinov2WithRegistersModel" in bare.no_readout_reason()


def test_clip_with_projection_is_checked_against_its_image_embeds():
    """CLIPVisionModelWithProjection returns visual_projection(post_layernorm(h_L[CLS])): the self-check compares
    that with the model's image_embeds; the features of every layer stay the block outputs. Without the final
    norm before the projection, layer L no longer equals the image embedding: refused."""
    model = tiny(transformers.CLIPVisionModelWithProjection, transformers.CLIPVisionConfig(**VIT, projection_dim=8))
    adapter = adapt(model)
    assert not adapter.has_readout
    assert adapter.readout_formula() == "no head; the model's output is visual_projection(post_layernorm(h_L[CLS]))"
    assert "image_embeds" in adapter.structure()["output"] and "not projected" in adapter.structure()["output"]
    with torch.no_grad():
        hidden = adapter.hidden_states(IMAGES)
        mine, own = adapter.final_features(hidden, IMAGES)
        assert own.shape == (3, 8) and torch.allclose(mine, model(IMAGES).image_embeds, atol=1e-5)
        assert torch.allclose(hidden.states[-1], model(IMAGES, output_hidden_states=True).hidden_states[-1], atol=1e-5)

    class NoNormBeforeProjection(HFVision):
        def norm(self, h):
            return h

    with pytest.raises(SelfCheckError, match="layer L is the model's output"):
        NoNormBeforeProjection(model)


def test_siglip_normalises_every_token_and_has_no_class_token():
    """SigLIP's post_layernorm normalises the whole sequence (CLIP's, the class token): the bare tower is checked
    against its normed tokens, read as CLIP's it is refused; SiglipForImageClassification reads
    classifier(mean of all normed tokens) at every layer; the attention-pooling head is named, not applied."""
    bare = tiny(transformers.SiglipVisionModel, transformers.SiglipVisionConfig(**VIT))
    adapter = adapt(bare)
    assert not adapter.has_class_token and "cls" not in adapter.poolings and adapter.num_prefix == 0
    assert adapter.structure()["final norm at"] == "post_layernorm (on every token)"
    assert "SiglipMultiheadAttentionPoolingHead" in adapter.structure()["pooled output"]
    with pytest.raises(SelfCheckError, match="layer L is the model's output"):
        assuming(HFVision, norm_before_pool=False)(bare)  # CLIP's norm of the pooled class token
    model = tiny(transformers.SiglipForImageClassification,
                 transformers.SiglipConfig(vision_config=VIT, num_labels=3))
    adapter = adapt(model)
    assert adapter.readout_pooling == "mean" and adapter.readout_formula() == "classifier(mean(post_layernorm(h_l)))"
    with torch.no_grad():
        read = adapter.read(adapter.hidden_states(IMAGES))
        own = model.vision_model(IMAGES, output_hidden_states=True)
        for l in range(1, 3):
            expected = model.classifier(model.vision_model.post_layernorm(own.hidden_states[l]).mean(1))
            assert torch.allclose(read[l - 1], expected, atol=1e-5)
        assert torch.allclose(read[-1], model(IMAGES).logits, atol=1e-5)


def test_whisper_audio_classifier_reads_its_head_at_every_layer(tmp_path):
    """WhisperForAudioClassification: logits = classifier(mean over frames of projector(layer_norm(h_L))); the
    same head on every layer, computed here in the model's order (projector, then the mean); the head ends in
    one linear layer (fusable). Saved and loaded, it is read as saved (no tokenizer). use_weighted_layer_sum
    (the head reads a mixture of every layer) is refused, saying why."""
    model = tiny(transformers.WhisperForAudioClassification, transformers.WhisperConfig(**WHISPER))
    adapter = adapt(model)
    assert type(adapter) is WhisperAudioClassifier and adapter.modality == "audio" and adapter.num_classes == 3
    assert adapter.reader.linear(1) is model.classifier
    with torch.no_grad():
        hidden = adapter.hidden_states(MELS)
        read = adapter.read(hidden)
        for l in range(1, 3):
            frames = model.projector(model.encoder.layer_norm(hidden.states[l - 1]))
            assert torch.allclose(read[l - 1], model.classifier(frames.mean(1)), atol=1e-5)
        assert torch.allclose(read[-1], model(MELS).logits, atol=1e-5)
    model.save_pretrained(tmp_path / "whisper-classifier")
    loaded = load_model(tmp_path / "whisper-classifier")
    assert type(loaded) is WhisperAudioClassifier and getattr(loaded, "tokenizer", None) is None
    with torch.no_grad():
        assert torch.allclose(loaded.logits(MELS), model(MELS).logits, atol=1e-5)
    weighted = transformers.WhisperForAudioClassification(transformers.WhisperConfig(**WHISPER,
                                                                                     use_weighted_layer_sum=True))
    with pytest.raises(ValueError, match="use_weighted_layer_sum=True: its head reads a softmax-weighted sum of every "
                                         "layer's hidden states, not the last layer"):
        adapt(weighted)


@pytest.mark.parametrize("cls, config_cls", [
    (transformers.Wav2Vec2ForSequenceClassification, transformers.Wav2Vec2Config),
    (transformers.HubertForSequenceClassification, transformers.HubertConfig)])
def test_wav2vec2_and_hubert_classifiers_read_their_head_at_every_layer(cls, config_cls, tmp_path):
    """Post-norm (base) and pre-norm (do_stable_layer_norm, with encoder.layer_norm after block L) variants: layer
    l is classifier(mean over frames of projector(n_l)), n_l normed only where the model normalises after block L;
    read with the other variant's norm, layer L no longer equals the logits: refused. A saved folder loads as
    saved. Waveforms too short for the convolutions are refused, saying how long they must be;
    use_weighted_layer_sum is refused."""
    for stable in (False, True):
        model = tiny(cls, config_cls(**WAV2VEC2, do_stable_layer_norm=stable))
        adapter = adapt(model)
        assert type(adapter) is WaveformClassifier and adapter.has_final_norm == stable and adapter.min_samples == 20
        with torch.no_grad():
            hidden = adapter.hidden_states(WAVES)
            read = adapter.read(hidden)
            for l in range(1, 3):
                normed = model.base_model.encoder.layer_norm(hidden.states[l - 1]) if stable else hidden.states[l - 1]
                assert torch.allclose(read[l - 1], model.classifier(model.projector(normed).mean(1)), atol=1e-5)
            assert torch.allclose(read[-1], model(WAVES).logits, atol=1e-5)
        with pytest.raises(SelfCheckError, match="layer L is the model's prediction"):
            assuming(WaveformClassifier, has_final_norm=not stable)(model)
    model.save_pretrained(tmp_path / "classifier")
    loaded = load_model(tmp_path / "classifier")
    assert type(loaded) is WaveformClassifier and type(loaded.model) is cls and loaded.has_final_norm
    with torch.no_grad():
        assert torch.allclose(loaded.logits(WAVES), model(WAVES).logits, atol=1e-5)
    with pytest.raises(ValueError, match=r"reads waveforms of at least 20 samples \(the receptive field of its "
                                         r"convolutional feature encoder\), got 19"):
        adapter.hidden_states(torch.randn(2, 19))
    with pytest.raises(ValueError, match="use_weighted_layer_sum=True: its head reads a softmax-weighted sum"):
        adapt(cls(config_cls(**WAV2VEC2, use_weighted_layer_sum=True)))
