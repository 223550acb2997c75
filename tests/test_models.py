"""Our ViT against timm, and the adapters against each model's own forward pass.

Tiny models are built from configs (nothing downloaded), saved to a temporary folder and loaded back
through `load_model`, the path users take. The two offline pretrained models are tested for real.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in these tests may touch the network

import pytest
import timm
import torch
import transformers
from transformers import AutoTokenizer

from layersim.models import (ExitHeads, HFCausalLM, HFEncoder, TimmViTAdapter, VisionTransformer, ViTAdapter,
                             ViTConfig, adapt, eval_mode, load_model, minilm_path, state_dict_from_timm,
                             state_dict_to_timm, timm_kwargs, tokenizer_fingerprint)

transformers.logging.set_verbosity_error()
TEXTS = ["the cat sat on the mat", "a short one", "transformers read every token of a rather longer sentence"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def tokenizer():
    """A real WordPiece tokenizer, from the offline MiniLM package (used by every tiny text model)."""
    return AutoTokenizer.from_pretrained(minilm_path())


def save_hf(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_text_config(kind, vocab_size, **extra):
    common = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                  intermediate_size=64, initializer_range=0.2)  # large enough for distinct logits per layer
    if kind == "bert":
        return transformers.BertConfig(**common, num_labels=3, **extra)
    if kind == "roberta":
        return transformers.RobertaConfig(**common, num_labels=3, pad_token_id=0, **extra)
    if kind == "llama":
        return transformers.LlamaConfig(**common, num_key_value_heads=1, max_position_embeddings=128, **extra)
    if kind == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=3, n_head=2, n_positions=128,
                                       initializer_range=0.2, **extra)
    raise ValueError(kind)


# ---- our ViT ---------------------------------------------------------------------------------------------
CFG = ViTConfig(image_size=28, in_chans=1, patch_size=7, depth=3, width=32, heads=4, num_classes=5)


def images(n=4, cfg=CFG, seed=0):
    return torch.randn(n, cfg.in_chans, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(seed))


def test_vit_matches_timm_both_ways():
    torch.manual_seed(0)
    ref = timm.models.VisionTransformer(**timm_kwargs(CFG)).eval()
    ours = VisionTransformer(CFG).eval()
    ours.load_state_dict(state_dict_from_timm(ref.state_dict()))
    x = images()
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
        timm_blocks = ref.forward_intermediates(x, norm=False, output_fmt="NLC", intermediates_only=True,
                                                return_prefix_tokens=True)
        timm_blocks = torch.stack([torch.cat([p, s], 1) for s, p in timm_blocks])
        assert torch.allclose(ours.forward_intermediates(x), timm_blocks, atol=1e-5)
        # the reverse direction: fresh weights of ours into a fresh timm model
        torch.manual_seed(1)
        ours2 = VisionTransformer(CFG).eval()
        ref.load_state_dict(state_dict_to_timm(ours2.state_dict()))
        assert torch.allclose(ours2(x), ref(x), atol=1e-5)
        assert not torch.allclose(ours2(x), ours(x), atol=1e-3)  # the copy mattered


def test_vit_readout_is_head_of_norm_of_every_cls():
    torch.manual_seed(0)
    model = VisionTransformer(CFG).eval()
    adapter = adapt(model)
    x = images()
    with torch.no_grad():
        hidden = adapter.hidden_states(x)
        assert hidden.states.shape == (3, 4, 17, 32)
        logits = adapter.read(hidden)
        assert logits.shape == (3, 4, 5)
        assert torch.allclose(logits[-1], model(x), atol=1e-6)
        # independent computation, block by block
        h = model.embed(x)
        for l, block in enumerate(model.blocks):
            h = block(h)
            assert torch.allclose(logits[l], model.head(model.norm(h[:, 0])), atol=1e-6)
            assert torch.allclose(adapter.reader(h[:, 0], l + 1), logits[l], atol=1e-6)  # the reader on CLS alone
    with pytest.raises(TypeError):
        adapter.reader(h[:, 0])  # the layer is never optional


def test_vit_multi_exit_heads():
    torch.manual_seed(0)
    cfg = ViTConfig(**{**CFG.__dict__, "multi_exit": True})
    model = VisionTransformer(cfg).eval()
    plain = VisionTransformer(CFG)
    L, C, d = cfg.depth, cfg.num_classes, cfg.width
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == (L - 1) * (C * d + C)  # PAPER.md: the parameter saving of one shared classifier
    x = images()
    adapter = adapt(model)
    heads = ExitHeads.for_adapter(adapter)
    assert heads.heads is model.exit_heads  # the model's own exit heads, read through ExitHeads
    with torch.no_grad():
        hidden = adapter.hidden_states(x)
        exits = adapter.read(hidden, reader=heads)
        shared = adapter.read(hidden)
        assert exits.shape == (L, 4, C)
        assert torch.allclose(exits[-1], model(x), atol=1e-6)
        assert not torch.allclose(exits[0], shared[0], atol=1e-3)  # its own head, not the shared one
        cls1 = model.norm(model.forward_intermediates(x)[0, :, 0])
        assert torch.allclose(exits[0], model.exit_heads[0](cls1), atol=1e-6)
    assert adapt(plain).own_exit_heads() is None


def test_vit_bad_input():
    model = VisionTransformer(CFG)
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\)"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\)"):
        model(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="hidden_states"):
        adapt(model).read(torch.randn(3, 2, 17, 16))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(image_size=30, patch_size=7)
    with pytest.raises(ValueError, match="divisible by heads"):
        ViTConfig(width=30, heads=4)


def test_vit_save_and_load_model(tmp_path):
    torch.manual_seed(0)
    model = VisionTransformer(CFG).eval()
    model.save(tmp_path / "vit.pt")
    adapter = load_model(tmp_path / "vit.pt")
    assert isinstance(adapter, ViTAdapter) and adapter.num_layers == 3 and adapter.width == 32
    x = images()
    with torch.no_grad():
        assert torch.equal(adapter.logits(x), model(x))
        hidden = adapter.hidden_states(x)
        assert torch.allclose(adapter.read(hidden)[-1], model(x), atol=1e-6)
        assert torch.equal(adapter.layers(x, "cls"), model.forward_intermediates(x)[:, :, 0])
        assert torch.equal(adapter.layers(x, "mean"), model.forward_intermediates(x)[:, :, 1:].mean(2))
        assert torch.equal(adapter.layers(x, "cls", layers=[3, 1]), model.forward_intermediates(x)[[2, 0], :, 0])
    assert "head(norm(h_l))" in adapter.describe()
    no_norm = ViTAdapter(model, final_norm=False)
    with torch.no_grad():
        assert torch.allclose(no_norm.read(hidden)[0], model.head(hidden.states[0, :, 0]))


# ---- timm ViT / DeiT -------------------------------------------------------------------------------------
TIMM_TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=7)


@pytest.mark.parametrize("variant", ["vit", "deit_distilled", "avg_pool_no_cls"])
def test_timm_adapter_from_saved_folder(tmp_path, variant):
    from timm.models import save_for_hf

    torch.manual_seed(0)
    arch, args = {"vit": ("vit_tiny_patch16_224", TIMM_TINY),
                  "deit_distilled": ("deit_tiny_distilled_patch16_224", TIMM_TINY),
                  "avg_pool_no_cls": ("vit_tiny_patch16_224", dict(TIMM_TINY, class_token=False, global_pool="avg")),
                  }[variant]
    model = timm.create_model(arch, pretrained=False, **args)
    save_for_hf(model.eval(), tmp_path / variant, model_args=args)
    adapter = load_model(tmp_path / variant)  # through timm's "local-dir:" loader
    assert isinstance(adapter, TimmViTAdapter)
    assert (adapter.num_layers, adapter.width, adapter.num_classes) == (3, 32, 7)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x)
        assert torch.allclose(adapter.logits(x), reference, atol=1e-6)  # the saved weights were loaded
        hidden = adapter.hidden_states(x)
        assert hidden.states.shape == (3, 5, 16 + model.num_prefix_tokens, 32)
        assert torch.allclose(adapter.read(hidden)[-1], reference, atol=1e-5)
        # hidden states against running timm's blocks by hand
        h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
        for l, block in enumerate(model.blocks):
            h = block(h)
            assert torch.allclose(hidden.states[l], h, atol=1e-6)
        if variant == "avg_pool_no_cls":
            with pytest.raises(ValueError, match="no class token"):
                adapter.pool(hidden, "cls")
        else:
            assert torch.equal(adapter.pool(hidden, "cls"), hidden.states[:, :, 0])
        assert torch.allclose(adapter.pool(hidden, "mean"), hidden.states[:, :, model.num_prefix_tokens:].mean(2))
    with pytest.raises(ValueError, match=r"\(batch, 3, 32, 32\)"):
        adapter.hidden_states(torch.randn(2, 3, 224, 224))


# ---- Hugging Face encoders -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "albert", "electra"])
def test_hf_encoder_readout_reproduces_logits(tmp_path, tokenizer, kind):
    torch.manual_seed(0)
    if kind == "distilbert":
        config = transformers.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=3, n_heads=2,
                                               hidden_dim=64, num_labels=3, initializer_range=0.2)
    elif kind in ("albert", "electra"):
        config_class = transformers.AlbertConfig if kind == "albert" else transformers.ElectraConfig
        config = config_class(vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, num_hidden_layers=3,
                              num_attention_heads=2, intermediate_size=64, num_labels=3, initializer_range=0.2)
    else:
        config = tiny_text_config(kind, len(tokenizer))
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    adapter = load_model(save_hf(model, tokenizer, tmp_path / kind))
    assert isinstance(adapter, HFEncoder)
    assert (adapter.num_layers, adapter.width, adapter.num_classes) == (3, 32, 3)
    with torch.no_grad():
        enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
        out = model(**enc, output_hidden_states=True)
        hidden = adapter.hidden_states(TEXTS)
        assert torch.allclose(hidden.states, torch.stack(out.hidden_states[1:]), atol=1e-6)
        assert torch.equal(hidden.mask, enc["attention_mask"].bool())
        logits = adapter.read(hidden)
        assert logits.shape == (3, 3, 3)
        assert torch.allclose(logits[-1], out.logits, atol=1e-6)
        assert torch.allclose(adapter.logits(TEXTS), out.logits, atol=1e-6)
        assert not torch.allclose(logits[0], logits[-1], atol=1e-3)


def test_hf_encoder_pooling_ignores_padding(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(tiny_text_config("bert", len(tokenizer))).eval()
    adapter = adapt(model, tokenizer)
    with torch.no_grad():
        batch = {p: adapter.layers(TEXTS, p) for p in ("mean", "cls", "last")}
        for i, text in enumerate(TEXTS):  # alone, without padding
            enc = tokenizer([text], return_tensors="pt")
            states = torch.stack(model.bert(**enc, output_hidden_states=True).hidden_states[1:])[:, 0]
            assert torch.allclose(batch["mean"][:, i], states.mean(1), atol=1e-5)
            assert torch.allclose(batch["cls"][:, i], states[:, 0], atol=1e-5)
            assert torch.allclose(batch["last"][:, i], states[:, -1], atol=1e-5)  # [SEP]
        tokens = adapter.layers(TEXTS, "tokens")
        assert tokens.shape == (3, int(tokenizer(TEXTS, padding=True, return_tensors="pt")["attention_mask"].sum()), 32)


# ---- Hugging Face causal LMs -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind,norm_name", [("gpt2", "ln_f"), ("llama", "norm")])
def test_causal_lm_readout_and_hidden_states(tmp_path, tokenizer, kind, norm_name):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_text_config(kind, len(tokenizer))).eval()
    adapter = load_model(save_hf(model, tokenizer, tmp_path / kind))
    assert isinstance(adapter, HFCausalLM)
    assert (adapter.num_layers, adapter.width, adapter.num_classes) == (3, 32, len(tokenizer))
    assert adapter.readout_formula() == f"lm_head({norm_name}(h_l))"
    norm = getattr(model.base_model, norm_name)
    with torch.no_grad():
        enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
        out = model(**enc, output_hidden_states=True)
        hidden = adapter.hidden_states(TEXTS)
        reference = torch.stack(out.hidden_states[1:])
        assert torch.allclose(hidden.states[:-1], reference[:-1], atol=1e-6)
        # Hugging Face's last hidden state is after the final norm; ours is the raw block output
        assert torch.allclose(norm(hidden.states[-1]), reference[-1], atol=1e-5)
        assert not torch.allclose(hidden.states[-1], reference[-1], atol=1e-3)
        logits = adapter.read(hidden)  # one row per token that has a next token
        samples = adapter.sample_mask(hidden, "tokens")
        assert logits.shape == (3, int(samples.sum()), len(tokenizer))
        assert torch.allclose(logits[-1], out.logits[samples], atol=1e-5)
        assert torch.allclose(logits[0], model.lm_head(norm(hidden.states[0]))[samples], atol=1e-6)
        # the authors' GPT-2 variant: no final norm on hidden layers
        raw = HFCausalLM(model, tokenizer, final_norm=False)
        assert "skipped" in raw.readout_formula()
        assert torch.allclose(raw.read(hidden, layers=1)[0], model.lm_head(hidden.states[0])[samples], atol=1e-6)
        # every real position with a next token is a sample; its target is that next token
        tokens = adapter.pool(hidden, "tokens")
        real = enc["attention_mask"].bool()
        assert tokens.shape[1] == int(real.sum()) - len(TEXTS)
        ids = enc["input_ids"]
        expected = torch.cat([ids[i, 1:int(real[i].sum())] for i in range(len(TEXTS))])
        assert torch.equal(adapter.next_tokens(hidden), expected)
        with pytest.raises(ValueError, match="no CLS token"):
            adapter.pool(hidden, "cls")


def test_hook_is_removed_and_train_state_restored(tokenizer):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(tiny_text_config("gpt2", len(tokenizer)))
    adapter = adapt(model, tokenizer)
    model.train()
    model.transformer.h[1].eval()  # a mixed state must come back as it was
    flags = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
        adapter.hidden_states(TEXTS, upto=2)  # stops the forward after block 2
    assert [m.training for m in model.modules()] == flags
    assert all(len(b._forward_hooks) == 0 and len(b._forward_pre_hooks) == 0 for b in model.transformer.h)
    # also when the forward pass fails inside the context
    with pytest.raises(ValueError, match="token ids must lie in"):
        with eval_mode(model):
            adapter.hidden_states({"input_ids": torch.tensor([[len(tokenizer) + 5]])})
    assert [m.training for m in model.modules()] == flags
    assert all(len(b._forward_hooks) == 0 for b in model.transformer.h)


def test_the_callers_tokenizer_is_left_as_it_was():
    """Padding is done by the adapter: the tokenizer's padding side and pad token are never changed."""
    own = AutoTokenizer.from_pretrained(minilm_path())
    own.padding_side = "left"
    before = (own.padding_side, own.pad_token, tokenizer_fingerprint(own))
    torch.manual_seed(0)
    adapter = adapt(transformers.GPT2LMHeadModel(tiny_text_config("gpt2", len(own))), own)
    with torch.no_grad():
        hidden = adapter.hidden_states(TEXTS)
    assert (own.padding_side, own.pad_token, tokenizer_fingerprint(own)) == before
    lengths = [len(own(t)["input_ids"]) for t in TEXTS]
    assert hidden.mask.sum(1).tolist() == lengths  # right-padded by the adapter
    assert all(bool(hidden.mask[i, :n].all()) for i, n in enumerate(lengths))


# ---- bad input ---------------------------------------------------------------------------------------------
def test_layer_index_out_of_range():
    adapter = adapt(VisionTransformer(CFG))
    x = images(2)
    for bad in (0, 4, -1, [1, 5], 2.0):
        with pytest.raises(ValueError, match=r"numbered 1\.\.3"):
            adapter.layers(x, "cls", layers=bad)
    with pytest.raises(ValueError, match=r"numbered 1\.\.3"):
        adapter.read(adapter.hidden_states(x), layers=[7])
    with pytest.raises(ValueError, match="pooling must be one of"):
        adapter.layers(x, "max")


def test_unknown_model_name_offline(tmp_path):
    with pytest.raises(FileNotFoundError, match="local folder") as info:
        load_model("no-such-org/no-such-model-xyz")
    assert "minilm-l6" in str(info.value) and "offline" in str(info.value)
    with pytest.raises(FileNotFoundError, match="timm / Hugging Face hub"):
        load_model("deit_tiny_patch16_224")  # a real timm name, but its weights are not cached here
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_model_without_recognisable_norm_or_head(tokenizer, monkeypatch):
    torch.manual_seed(0)
    config = tiny_text_config("gpt2", len(tokenizer))
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # a trained-looking norm, so that reading without it differs clearly
        model.transformer.ln_f.weight.uniform_(0.5, 2.0)
    from layersim.models import families

    # a family whose final norm sits where the lookup does not look (here: GPT-2 with ln_f not on the list)
    monkeypatch.setattr(families, "DECODER_NORM_PATHS", ("norm",))
    with pytest.raises(ValueError, match="fails the self-check 'layer L is the model's prediction'") as info:
        adapt(model, tokenizer)  # no final norm found: read without one, which the self-check refuses
    assert "check=False" in str(info.value) and "lm_head(h_l) (no final norm)" in str(info.value)
    adapter = HFCausalLM(model, tokenizer, norm=model.transformer.ln_f)  # the documented way out
    assert adapter.norm_module is model.transformer.ln_f
    with pytest.raises(ValueError, match="AutoModelForCausalLM"):
        adapt(transformers.GPT2Model(config), tokenizer)
    with pytest.raises(ValueError, match="LayerAdapter"):
        adapt(torch.nn.Sequential(torch.nn.Linear(3, 3)))
    bare = adapt(transformers.BertModel(tiny_text_config("bert", len(tokenizer))), tokenizer)
    with pytest.raises(ValueError, match="no classification head"):
        bare.read(bare.hidden_states(TEXTS))


def test_text_adapter_rejects_wrong_input(tokenizer):
    adapter = adapt(transformers.BertModel(tiny_text_config("bert", len(tokenizer))), tokenizer)
    with pytest.raises(ValueError, match="list of strings"):
        adapter.hidden_states(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="single string"):
        adapter.hidden_states("just one string")
    with pytest.raises(ValueError, match=r"\(batch, tokens\)"):
        adapter.hidden_states({"input_ids": torch.tensor([1, 2, 3])})


# ---- the offline pretrained models, for real -------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm-l6")


@pytest.mark.slow
def test_minilm_offline(minilm):
    assert (minilm.num_layers, minilm.width, minilm.num_classes) == (6, 384, None)
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    with torch.no_grad():
        hidden = minilm.hidden_states(texts)
        enc = minilm.tokenizer(texts, padding=True, return_tensors="pt")
        out = minilm.model(**enc, output_hidden_states=True)
        assert torch.allclose(hidden.states, torch.stack(out.hidden_states[1:]), atol=1e-6)
        emb = torch.nn.functional.normalize(minilm.pool(hidden, "mean")[-1], dim=-1)  # sentence-transformers
    sims = emb @ emb.T
    assert sims[0, 1] > 0.6 and sims[0, 2] < 0.2  # paraphrase close, unrelated far: the weights are real
    with_head = load_model("minilm-l6", num_labels=2)  # a fresh classification head on the real encoder
    with torch.no_grad():
        hidden = with_head.hidden_states(texts)
        assert torch.allclose(with_head.read(hidden)[-1], with_head.logits(texts), atol=1e-6)
        assert torch.allclose(hidden.states, torch.stack(out.hidden_states[1:]), atol=1e-6)


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


@pytest.mark.slow
def test_smollm2_offline(smollm2):
    assert (smollm2.num_layers, smollm2.width, smollm2.num_classes) == (30, 576, 49152)
    assert smollm2.readout_formula() == "lm_head(norm(h_l))"
    texts = ["The capital of France is", "One, two, three, four,"]
    with torch.no_grad():
        hidden = smollm2.hidden_states(texts)
        enc = smollm2.encode(texts)
        out = smollm2.model(**enc, output_hidden_states=True)
        assert torch.allclose(hidden.states[:-1], torch.stack(out.hidden_states[1:-1]), atol=1e-5)
        assert torch.allclose(smollm2.norm(hidden.states[-1]), out.hidden_states[-1], atol=1e-4)
        last = smollm2.reader(smollm2.head_inputs(hidden, "last", layers=[30])[0], 30)  # (2, V)
        samples = smollm2.sample_mask(hidden, "tokens")
        final = smollm2.read(hidden, layers=[30])[0]
        assert torch.allclose(final, out.logits[samples], atol=1e-4)
    words = [smollm2.tokenizer.decode(int(i)) for i in last.argmax(-1)]
    assert words == [" Paris", " five"]


# ---- the reshape: readout conventions of decoders, truncated forwards, exit heads -------------------------
@pytest.mark.parametrize("kind,norm_name", [("gpt2", "ln_f"), ("llama", "norm")])
@pytest.mark.parametrize("final_norm", [True, False])
def test_decoder_readout_of_last_layer_is_the_models_prediction(tokenizer, kind, norm_name, final_norm):
    """Whatever final_norm says, layer L reads as the model's own logits; layers 1..L-1 match a reference
    computed by hand from Hugging Face's output_hidden_states (lm_head(norm(h)) or lm_head(h))."""
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_text_config(kind, len(tokenizer))).eval()
    adapter = adapt(model, tokenizer, final_norm=final_norm)
    norm = getattr(model.base_model, norm_name)
    with torch.no_grad():
        enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
        out = model(**enc, output_hidden_states=True)
        hidden = adapter.hidden_states(TEXTS)
        logits = adapter.read(hidden)  # (L, tokens, V)
        samples = adapter.sample_mask(hidden, "tokens")
        assert torch.equal(logits[-1], out.logits[samples])  # exactly the model's computation
        for l in range(2):  # hidden layers, by hand
            h = out.hidden_states[l + 1]
            expected = model.lm_head(norm(h) if final_norm else h)
            assert torch.allclose(logits[l], expected[samples], atol=1e-6)
        check_read_stats(adapter, hidden, logits)
    if not final_norm:
        assert "skipped" in adapter.readout_formula() and "for l = L" in adapter.readout_formula()


def check_read_stats(adapter, hidden, logits):
    """read_stats, a chunk of rows and one layer at a time, gives the statistics of the stacked logits bit for
    bit, and never asks the head for more than one chunk of one layer."""
    from layersim.metrics.readout import readout_stats
    from layersim.models import read_stats, readers

    vectors, n, V = adapter.head_inputs(hidden), logits.shape[1], logits.shape[2]
    targets = torch.arange(n) % V
    calls = []

    def reader(v, layer):
        calls.append(tuple(v.shape))
        return adapter.reader(v, layer)

    reader.num_classes = adapter.reader.num_classes
    step = 3
    old, readers.LOGIT_ELEMENTS_PER_CHUNK = readers.LOGIT_ELEMENTS_PER_CHUNK, step * V
    try:
        chunks = list(read_stats(reader, vectors, [1, 2, 3], final=True, targets=targets, topk=2, keep=[0, 2],
                                 keep_logits=True))
    finally:
        readers.LOGIT_ELEMENTS_PER_CHUNK = old
    # the head on 3 rows at a time (BLAS may round a product of 3 rows differently from one of n rows)
    chunked = torch.stack([torch.cat([adapter.reader(vectors[k, s:s + step], k + 1) for s in range(0, n, step)])
                           for k in range(3)])
    assert torch.allclose(chunked, logits, atol=1e-5)
    logits = chunked
    want = readout_stats(logits[[0, 2]], final_pred=logits[-1].argmax(-1), targets=targets, topk=2)
    assert len(chunks) == -(-n // step) > 1 and all(rows.stop - rows.start <= step for rows, _ in chunks)
    assert set(chunks[0][1]) == set(want) | {"logits"}
    for field, value in want.items():
        assert torch.equal(torch.cat([c[field] for _, c in chunks], dim=1), value), field
    assert torch.equal(torch.cat([c["logits"] for _, c in chunks], dim=1), logits[[0, 2]])
    assert all(len(shape) == 2 and shape[0] <= step for shape in calls)  # (rows, d): one layer per call
    assert len(calls) == 2 * len(chunks)  # layer 3 read once, for both its stats and every final_pred


def test_smollm2_last_layer_reads_as_its_logits_without_final_norm(smollm2):
    raw = HFCausalLM(smollm2.model, smollm2.tokenizer, final_norm=False)
    texts = ["The capital of France is"]
    with torch.no_grad():
        hidden = raw.hidden_states(texts)
        final = raw.read(hidden, layers=[30])[0]
        assert torch.equal(final, smollm2.model(**smollm2.encode(texts)).logits[raw.sample_mask(hidden, "tokens")])


def _tiny_models(tokenizer):
    torch.manual_seed(0)
    timm_vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TIMM_TINY)
    bert = transformers.BertForSequenceClassification(tiny_text_config("bert", len(tokenizer)))
    gpt2 = transformers.GPT2LMHeadModel(tiny_text_config("gpt2", len(tokenizer)))
    return {"timm": (timm_vit, torch.randn(4, 3, 32, 32)), "bert": (bert, TEXTS), "gpt2": (gpt2, TEXTS),
            "ours": (VisionTransformer(CFG), images())}


@pytest.mark.parametrize("name", ["ours", "timm", "bert", "gpt2"])
def test_truncated_forward_equals_the_first_blocks_of_the_full_one(tokenizer, name):
    model, batch = _tiny_models(tokenizer)[name]
    adapter = adapt(model.eval(), tokenizer)
    calls = []
    blocks = model.blocks if name in ("ours", "timm") else (model.bert.encoder.layer if name == "bert"
                                                           else model.transformer.h)
    handles = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            full = adapter.hidden_states(batch)
            calls.clear()
            part = adapter.hidden_states(batch, upto=2)
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1]  # block 3 never ran
    assert part.states.shape[0] == 2 and torch.allclose(part.states, full.states[:2], atol=1e-6)
    with pytest.raises(ValueError, match=r"numbered 1\.\.3"):
        adapter.hidden_states(batch, upto=4)


@pytest.mark.parametrize("name", ["timm", "bert", "gpt2", "ours"])
def test_exit_heads_train_from_one_forward_on_any_adapter(tokenizer, name):
    """One forward gives the shared readout and every exit head's logits; head l on layer l equals the
    head applied by hand to hidden_states at layer l; one optimizer step moves every head."""
    model, batch = _tiny_models(tokenizer)[name]
    if name == "ours":
        model = VisionTransformer(CFG, multi_exit=True)
    adapter = adapt(model.train(), tokenizer)
    heads = ExitHeads.for_adapter(adapter)
    L, d, C = adapter.num_layers, adapter.width, adapter.num_classes
    assert heads.num_parameters == (L - 1) * (C * d + C)
    if name == "ours":
        assert heads.heads is model.exit_heads  # the ViT keeps its heads (and its saved format)
    before = [h.weight.detach().clone() for h in heads.heads]
    optimizer = torch.optim.SGD(list(model.parameters()) + list(heads.parameters()), lr=0.1)
    with eval_mode(model):  # dropout off, so the by-hand check below sees the same numbers
        hidden = adapter.hidden_states(batch)
        shared = adapter.read(hidden)
        exits = adapter.read(hidden, reader=heads)
    assert shared.shape == exits.shape and torch.equal(shared[-1], exits[-1])
    for l in range(L - 1):  # by hand: pool layer l of hidden_states, final norm, the layer's own linear head
        by_hand = adapter.pool(hidden, adapter.readout_pooling)[l]
        by_hand = heads.heads[l](adapter.norm(by_hand))
        assert torch.allclose(exits[l], by_hand, atol=1e-6)
    with torch.no_grad(), eval_mode(model):
        own = adapter.logits(batch)
        own = own[adapter.sample_mask(hidden, "tokens")] if name == "gpt2" else own
        assert torch.allclose(shared[-1], own, atol=1e-5)
    targets = adapter.targets(hidden, torch.arange(len(batch)) % C)
    loss = sum(torch.nn.functional.cross_entropy(logit, targets) for logit in exits)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert all(not torch.equal(b, h.weight) for b, h in zip(before, heads.heads))


def test_adapters_never_ask_for_the_model_family():
    """Extraction, training and early exit call one interface: no branch on a model kind outside adapters."""
    import pathlib
    import re

    import layersim

    root = pathlib.Path(layersim.__file__).parent
    offenders = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.parent.name != "models"
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\w\.kind\s*[=!]=|isinstance\([^)]*(HFCausalLM|HFEncoder|ViTAdapter|TimmViTAdapter)", line)]
    assert offenders == []


def test_encoder_decoder_models_are_named_as_such():
    config = transformers.BartConfig(vocab_size=100, d_model=16, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                     decoder_ffn_dim=32)
    with pytest.raises(ValueError, match=r"BartModel belongs to an encoder-decoder family \(bart\) whose layers "
                                         r"layersim does not read; of encoder-decoder models it reads the encoder "
                                         r"stack of T5EncoderModel, T5Model"):
        adapt(transformers.BartModel(config))


def tiny_t5(cls=transformers.T5ForConditionalGeneration, vocab_size=100):
    torch.manual_seed(0)
    model = cls(transformers.T5Config(vocab_size=vocab_size, d_model=32, d_kv=16, d_ff=64, num_layers=3,
                                      num_decoder_layers=2, num_heads=2)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.3, 2.0)
    return model


def tiny_whisper(cls=transformers.WhisperForConditionalGeneration):
    torch.manual_seed(0)
    model = cls(transformers.WhisperConfig(
        vocab_size=100, num_mel_bins=8, d_model=32, encoder_layers=3, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.3, 2.0)
    return model


@pytest.mark.parametrize("kind", ["t5", "t5-encoder", "whisper", "whisper-model"])
def test_encoder_stacks_are_read_block_by_block_and_their_final_norm_is_their_output(kind):
    """Layer l of the encoder stack is Hugging Face's hidden_states[l] for l < L; Hugging Face's last entry is the
    stack's output, after its final norm: the adapter's norm on layer L. The structure names what is read."""
    if kind.startswith("t5"):
        model = tiny_t5(transformers.T5EncoderModel if kind == "t5-encoder" else transformers.T5ForConditionalGeneration)
        mask = torch.ones(3, 9, dtype=torch.long)
        mask[2, 6:] = 0
        batch = {"input_ids": torch.randint(0, 100, (3, 9), generator=torch.Generator().manual_seed(1)),
                 "attention_mask": mask}
    else:
        model = tiny_whisper(transformers.WhisperModel if kind == "whisper-model" else
                             transformers.WhisperForConditionalGeneration)
        batch = torch.randn(3, 8, 32, generator=torch.Generator().manual_seed(1))
    adapter = adapt(model)
    encoder = model.get_encoder()
    with torch.no_grad():
        own = encoder(**batch, output_hidden_states=True) if isinstance(batch, dict) else \
            encoder(input_features=batch, output_hidden_states=True)
        hidden = adapter.hidden_states(batch)
        real = hidden.mask
        for l in range(1, 3):
            assert torch.allclose(hidden.states[l - 1][real], own.hidden_states[l][real], atol=1e-5)
        assert torch.allclose(adapter.norm(hidden.states[-1])[real], own.last_hidden_state[real], atol=1e-5)
        assert not torch.allclose(hidden.states[-1][real], own.last_hidden_state[real], atol=1e-3)  # raw: not normed
    structure = adapter.structure()
    assert not adapter.has_readout and structure["head"] == "none (the decoder reads the encoder)"
    assert structure["read"].endswith("(its decoder is not read)") == (kind != "t5-encoder")
    assert "after block L (layer l: the raw output of block l)" in structure["final norm at"]
    if kind.startswith("t5"):
        with pytest.raises(NotImplementedError, match="relative position bias"):
            adapter.begin(batch)
    else:
        with pytest.raises(ValueError, match=r"expected log-mel features of shape \(batch, 8, 32\)"):
            adapter.hidden_states(torch.randn(3, 8, 30))
        with pytest.raises(ValueError, match="expects floating-point log-mel features"):
            adapter.hidden_states(torch.ones(3, 8, 32, dtype=torch.long))


# ---- bad input to models (issue 8) -------------------------------------------------------------------------
def test_vit_casts_float_images_and_refuses_integer_or_nonfinite_ones():
    model = VisionTransformer(CFG).eval()
    x = images()
    with torch.no_grad():
        reference = model(x)
        assert torch.allclose(model(x.double()), reference, atol=1e-5)
        assert torch.allclose(model(x.half()), reference, atol=5e-2)
        assert torch.allclose(adapt(model).logits(x.to(torch.bfloat16)), reference, atol=1e-1)
        with pytest.raises(ValueError, match="floating-point images, got dtype torch.uint8"):
            model((x * 100).clamp(0, 255).to(torch.uint8))
        bad = x.clone()
        bad[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN or infinite"):
            adapt(model).hidden_states(bad)


@pytest.mark.parametrize("field,value", [("patch_size", 0), ("heads", 0), ("in_chans", 0), ("image_size", 0),
                                         ("depth", 0), ("width", -8), ("patch_size", 2.5), ("mlp_ratio", 0)])
def test_vit_config_rejects_nonsense(field, value):
    with pytest.raises(ValueError, match=f"ViTConfig.{field}"):
        ViTConfig(**{field: value})


def test_loading_a_file_that_is_not_a_checkpoint_says_so(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04 this is not a checkpoint")
    for load in (lambda: load_model(garbage), lambda: VisionTransformer.load(garbage)):
        with pytest.raises(ValueError, match=r"garbage\.pt is not a readable layersim ViT checkpoint"):
            load()
    truncated = tmp_path / "truncated.pt"
    VisionTransformer(CFG).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.pt is not a readable"):
        VisionTransformer.load(truncated)


def test_text_adapter_names_the_item_of_the_wrong_type(tokenizer):
    bert = adapt(transformers.BertModel(tiny_text_config("bert", len(tokenizer))).eval(), tokenizer)
    with pytest.raises(ValueError, match="item 1 is NoneType"):
        bert.hidden_states(["a", None])


def test_labels_are_checked_at_the_boundary():
    adapter = adapt(VisionTransformer(CFG).eval())
    with torch.no_grad():
        hidden = adapter.hidden_states(images())
    assert torch.equal(adapter.targets(hidden, [0, 1, 2, 4]), torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="integer class indices"):
        adapter.targets(hidden, torch.tensor([0.0, 1.7, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"class indices in \[0, 5\).*5 classes.*from 0 to 9"):
        adapter.targets(hidden, [0, 5, 9, 1])
    with pytest.raises(ValueError, match="labels hold 2 samples but the per-layer outputs hold 4"):
        adapter.targets(hidden, [0, 1])


@pytest.mark.parametrize("name", ["ours", "timm", "bert", "gpt2"])
@pytest.mark.parametrize("final_norm", [True, False])
def test_readers_expose_their_linear_layer(tokenizer, name, final_norm):
    """Where a reader's last step is one linear layer it says so (for fused losses): linear(pre(v)) is the
    reading; the exit heads read layers 1..L-1 with their own linear layer and layer L with the model's."""
    model, batch = _tiny_models(tokenizer)[name]
    adapter = adapt(model.eval(), tokenizer, final_norm=final_norm)
    heads = ExitHeads.for_adapter(adapter)
    with torch.no_grad():
        vectors = adapter.head_inputs(adapter.hidden_states(batch))
        for l in range(1, adapter.num_layers + 1):
            reader = adapter.reader
            linear = reader.linear(l)
            assert (linear is not None) == (name != "bert")
            if linear is not None:
                by_parts = torch.nn.functional.linear(reader.pre(vectors[l - 1], l), linear.weight, linear.bias)
                assert torch.allclose(by_parts, reader(vectors[l - 1], l), atol=1e-6)
            if l < adapter.num_layers:
                assert heads.linear(l) is heads.heads[l - 1]
                by_parts = heads.linear(l)(heads.pre(vectors[l - 1], l))
                assert torch.allclose(by_parts, heads(vectors[l - 1], l), atol=1e-6)
            else:
                assert torch.equal(heads(vectors[l - 1], l), reader(vectors[l - 1], l))


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_a_first_truncated_call_does_not_break_later_full_ones(tokenizer, name):
    """transformers installs its hidden-state hooks on the first call, on the blocks present then."""
    model, batch = _tiny_models(tokenizer)[name]
    adapter = adapt(model.eval(), tokenizer)
    with torch.no_grad():
        part = adapter.hidden_states(batch, upto=2)
        full = adapter.hidden_states(batch)
    assert full.states.shape[0] == 3 and torch.allclose(part.states, full.states[:2], atol=1e-6)


# ---- a text encoder read by mean pooling (sentence encoders such as MiniLM-L6) -----------------------------
def test_encoder_head_can_read_mean_pooled_tokens(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(tiny_text_config("bert", len(tokenizer))).eval()
    folder = save_hf(model, tokenizer, tmp_path / "bert")
    cls_reader = load_model(folder)
    mean_reader = load_model(folder, readout_pooling="mean")
    texts = ["a fine film", "dull and far too long, with padding to spare"]
    with torch.no_grad():
        hidden = mean_reader.hidden_states(texts)
        mask = hidden.mask[None, :, :, None].float()
        by_hand = (hidden.states * mask).sum(2) / mask.sum(2)          # (L, B, d) mean of the real tokens
        pooler, classifier = mean_reader.model.bert.pooler.dense, mean_reader.model.classifier
        expected = classifier(torch.tanh(pooler(by_hand)))
        assert torch.allclose(mean_reader.read(hidden), expected, atol=1e-5)
        assert torch.allclose(mean_reader.logits(texts), expected[-1], atol=1e-5)  # its prediction reads the mean too
        assert torch.allclose(cls_reader.logits(texts), cls_reader.model(**cls_reader.encode(texts)).logits)
        assert not torch.allclose(cls_reader.read(hidden), expected, atol=1e-3)
    assert mean_reader.fingerprint() != cls_reader.fingerprint()  # cached features/readouts kept apart
    assert "mean-pooled" in mean_reader.readout_formula()
    with pytest.raises(ValueError, match="can read pooling 'cls' or 'mean', not 'tokens'"):
        mean_reader.set_readout_pooling("tokens")
    vit = adapt(VisionTransformer(CFG))
    with pytest.raises(ValueError, match="can read pooling 'cls', not 'mean'"):
        vit.set_readout_pooling("mean")


def test_smollm2_is_parsed_once_then_read_from_a_cached_copy(tmp_path, monkeypatch):
    """The GGUF file costs ~30 s to parse and dequantise; later loads read a cached float32 copy that gives
    the same weights, tokenizer and fingerprint (so feature caches keyed by it stay valid)."""
    monkeypatch.setenv("LAYERSIM_CACHE", str(tmp_path))
    first = load_model("smollm2-135m")
    copies = [p for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")]
    assert len(copies) == 1 and (copies[0] / "weights.pt").is_file()
    second = load_model("smollm2-135m")
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert second.model.lm_head.weight.data_ptr() == second.model.model.embed_tokens.weight.data_ptr()  # still tied
    assert first.fingerprint() == second.fingerprint()
    text = "The capital of France is"
    assert first.tokenizer(text)["input_ids"] == second.tokenizer(text)["input_ids"]


def test_hugging_face_vision_models_are_read_and_unknown_vision_classes_refused_as_vision():
    """A bare HF ViTModel is read (features only, checked against its own output); a vision class that is not in
    the table is refused as a vision model, naming the classes read; a bare causal-LM base model still gets the
    decoder advice."""
    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                    image_size=8, patch_size=4)
    adapter = adapt(transformers.ViTModel(config))
    assert not adapter.has_readout and adapter.structure()["head"] == "none (a bare backbone)"
    with pytest.raises(ValueError, match=r"ViTForMaskedImageModeling \(vit\): the Hugging Face vision classes read "
                                         r"are ViTModel, .*CLIPVisionModelWithProjection, .*SiglipForImageClassification; "
                                         r"for another, use timm") as caught:
        adapt(transformers.ViTForMaskedImageModeling(config))
    assert "decoder" not in str(caught.value)
    gpt = transformers.GPT2Model(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20))
    with pytest.raises(ValueError, match="decoder without its language-model head"):
        adapt(gpt)


def tiny_vision(cls, config_cls, **extra):
    torch.manual_seed(0)
    config = config_cls(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, **extra)
    model = cls(config).eval()
    with torch.no_grad():  # final norms far from the identity, as in a trained model
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.3, 2.0)
                module.bias.uniform_(-0.5, 0.5)
    return model


def test_hf_vision_heads_are_read_as_the_model_reads_them():
    """Dinov2 reads concat(CLS, mean of the normalised patch tokens): read with the mean taken before the final
    norm, its layer L no longer equals the model's logits and the self-check refuses it. Skipping the final norm
    on layers < L keeps layer L the model's prediction."""
    from layersim.models import HFVision, SelfCheckError

    dinov2 = tiny_vision(transformers.Dinov2ForImageClassification, transformers.Dinov2Config, num_labels=3)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        own = dinov2(x).logits
        for final_norm in (True, False):
            adapter = adapt(dinov2, final_norm=final_norm)
            read = adapter.read(adapter.hidden_states(x))
            assert torch.allclose(read[-1], own, atol=1e-5)
        skipped, normed = read, adapt(dinov2).read(adapter.hidden_states(x))
        assert not torch.allclose(skipped[0], normed[0], atol=1e-3)
    assert adapter.head_tokens == 2 and "concat" in adapter.structure()["head"]
    with pytest.raises(ValueError, match="reads 2 vectors with its head"):
        ExitHeads.for_adapter(adapter)

    class MeanBeforeNorm(HFVision):  # a wrong assumption: pool first, then normalise
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.norm_before_pool = False

        def _head_vectors(self, hidden, numbers, pooling):
            pooled = torch.stack([hidden.states[:, :, 0], self.pool(hidden, "mean")], dim=2)
            return torch.stack([self.norm(p) for p in pooled])

    with pytest.raises(SelfCheckError, match="layer L is the model's prediction"):
        MeanBeforeNorm(dinov2)


def test_hf_vision_backbones_are_checked_against_their_own_output():
    """A bare CLIP vision tower's output is post_layernorm of the class token: read as a sequence norm (ViT's),
    the self-check refuses it; a DeiT with teacher is stepped block by block to its last layer."""
    from layersim.models import HFVision, SelfCheckError

    clip = tiny_vision(transformers.CLIPVisionModel, transformers.CLIPVisionConfig)
    adapter = adapt(clip)
    assert not adapter.has_readout and adapter.structure()["final norm at"] == "post_layernorm (on the pooled class token)"
    assert "bare CLIPVisionModel without a classification head" in adapter.no_readout_reason()

    class SequenceNorm(HFVision):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.norm_before_pool = True

    with pytest.raises(SelfCheckError, match="layer L is the model's output"):
        SequenceNorm(clip)
    deit = tiny_vision(transformers.DeiTForImageClassificationWithTeacher, transformers.DeiTConfig, num_labels=4)
    adapter = adapt(deit)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        stepped = adapter.run_blocks(adapter.begin(x), 2).tokens
        assert torch.allclose(stepped, adapter.hidden_states(x).states[-1], atol=1e-5)
    assert adapter.num_prefix == 2 and adapter.head_tokens == 2
    with pytest.raises(ValueError, match=r"expected images of shape \(batch, 3, 16, 16\)"):
        adapter.hidden_states(torch.randn(2, 3, 32, 32))


class AddsToItsInput(torch.nn.Module):
    """A block that changes its input in place before running (as some block implementations do)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, hidden_states, *args, **kwargs):
        hidden_states.add_(1.0)
        return self.block(hidden_states, *args, **kwargs)


def test_layer_0_is_kept_before_a_block_changes_its_input_in_place(tokenizer):
    """Layer 0 (the embedding output) is copied before block 1 runs: a first block that adds to its input in place
    leaves it equal to the embedding module's output, whether the blocks run in the model's own forward (a Hugging
    Face ViT, read with hooks) or in layersim's loop (BERT)."""
    from layersim.models.families import find_blocks

    vit = tiny_vision(transformers.ViTForImageClassification, transformers.ViTConfig, num_labels=3)
    bert = transformers.BertForSequenceClassification(tiny_text_config("bert", len(tokenizer))).eval()
    ids = torch.randint(5, len(tokenizer), (2, 6), generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cases = [(vit, x, lambda: vit.vit.embeddings(x)),
             (bert, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
              lambda: bert.bert.embeddings(input_ids=ids))]
    for model, batch, embed in cases:
        with torch.no_grad():
            plain = adapt(model, tokenizer).hidden_states(batch)
            blocks = find_blocks(model.base_model)[1]
            blocks[0] = AddsToItsInput(blocks[0])
            hidden = adapt(model, tokenizer).hidden_states(batch)
            assert not torch.allclose(hidden.states[0], plain.states[0], atol=1e-3)  # the block did add to its input
            assert torch.allclose(hidden.embedded, embed(), atol=1e-6)
            assert torch.allclose(hidden.embedded, plain.embedded, atol=1e-6)


def test_gemma2_soft_capping_is_read_at_every_layer_and_never_fused_away(monkeypatch):
    """Gemma-2's head is cap * tanh(lm_head(norm(h)) / cap): the reader applies the cap on every layer (layer L is
    the model's own logits), so the head does not end in one linear layer and the losses form the capped
    logits instead of fusing lm_head with the cross-entropy (which would drop the cap); fused=True is refused."""
    from layersim import losses

    torch.manual_seed(0)
    model = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
        head_dim=16, intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
        final_logit_softcapping=2.0)).eval()
    adapter = adapt(model)  # self-checked: layer L equals the model's soft-capped logits
    assert adapter.reader.linear(1) is None and adapter.readout_formula() == "2 * tanh(lm_head(norm(h_l)) / 2)"
    assert "soft-capped at 2" in adapter.structure()["head"]
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    hidden = adapter.hidden_states({"input_ids": ids})
    vectors = adapter.head_inputs(hidden).detach()
    targets = adapter.targets(hidden)
    read = adapter.read(hidden)
    assert read.abs().max() <= 2.0  # every layer is capped, not only layer L
    uncapped = model.lm_head(adapter.norm(vectors[0]))
    assert uncapped.abs().max() > 2.0 and torch.allclose(read[0], torch.tanh(uncapped / 2) * 2, atol=1e-6)
    monkeypatch.setattr(losses, "FUSE_ABOVE_ELEMENTS", 0)  # a vocabulary large enough to fuse, were it linear
    weights = losses.aligned_weights(3)
    loss = losses.readout_cross_entropy(vectors, adapter.reader, targets, weights).loss
    expected = sum(w * torch.nn.functional.cross_entropy(r, targets) for w, r in zip(weights, read))
    assert torch.allclose(loss, expected, atol=1e-5)
    with pytest.raises(ValueError, match="fused=True needs a reader whose last step is one linear layer"):
        losses.layer_loss(vectors[0], adapter.reader, 1, targets, fused=True)
    # the capped head is read a chunk of rows at a time under checkpointing: the same loss and gradients as the
    # whole logits, and no call of the head on more rows than a chunk
    from layersim.models import readers

    model.double()
    vectors = vectors.double()
    grads = {}
    for name, elements in (("whole", 2 ** 62), ("chunked", 0)):
        monkeypatch.setattr(losses, "FUSE_ABOVE_ELEMENTS", elements)
        monkeypatch.setattr(readers, "LOGIT_ELEMENTS_PER_CHUNK", 5 * 100)  # 5 rows of 100 logits
        calls = []

        def reader(v, layer):
            calls.append(v.shape[0])
            return adapter.reader(v, layer)

        reader.num_classes = 100
        v = vectors.clone().requires_grad_()
        model.zero_grad()
        loss = losses.readout_cross_entropy(v, reader, targets, weights, label_smoothing=0.1).loss
        loss.backward()
        grads[name] = (loss.detach(), v.grad, model.lm_head.weight.grad.clone(), max(calls))
    assert torch.allclose(grads["whole"][0], grads["chunked"][0], rtol=1e-12)
    for got, want in zip(grads["chunked"][1:3], grads["whole"][1:3]):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    assert grads["whole"][3] == targets.numel() and grads["chunked"][3] == 5


def test_saved_vision_and_encoder_decoder_folders_load_as_saved(tmp_path, tokenizer):
    """A saved Hugging Face vision model or encoder-decoder model loads as the class it was saved as (no
    tokenizer for images and audio) and is read as in memory."""
    from layersim.models import HFVision, T5EncoderStack, WhisperEncoderStack

    dinov2 = tiny_vision(transformers.Dinov2ForImageClassification, transformers.Dinov2Config, num_labels=3)
    dinov2.save_pretrained(tmp_path / "dinov2")
    t5 = tiny_t5(vocab_size=len(tokenizer))
    save_hf(t5, tokenizer, tmp_path / "t5")
    tiny_whisper(transformers.WhisperModel).save_pretrained(tmp_path / "whisper")
    vision, text, audio = (load_model(tmp_path / name) for name in ("dinov2", "t5", "whisper"))
    assert (type(vision), type(text), type(audio)) == (HFVision, T5EncoderStack, WhisperEncoderStack)
    assert type(text.model).__name__ == "T5ForConditionalGeneration" and text.tokenizer is not None
    assert type(audio.model).__name__ == "WhisperModel" and audio.modality == "audio"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(vision.logits(x), dinov2(x).logits, atol=1e-5)
        ids = text.encode(["a short text", "another one"])
        assert torch.allclose(text.hidden_states(ids).states, adapt(t5).hidden_states(ids).states, atol=1e-5)
