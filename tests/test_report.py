"""`layersim.report`: the paper's analysis of any model in one call or one command.

Tiny models are built from configs (nothing downloaded) and, for the command line, saved to folders with
save_pretrained, the path users take. The last layer's numbers are compared with the model's own logits.
"""
import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoTokenizer

from headless_chromium import needs_chromium, rendered_dom
from layersim import data as D
from layersim.models import HFEncoder, minilm_path
from layersim.report import ReportError, report
from layersim.report.cli import main

transformers.logging.set_verbosity_error()
LIB = Path(__file__).resolve().parents[1] / "lib"


@pytest.fixture(scope="module")
def wordpiece():
    """A real WordPiece tokenizer, from the offline MiniLM package."""
    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A small byte-level BPE tokenizer (it has the end-of-text token that packing needs)."""
    return D.train_bpe_tokenizer(D.load_english_corpus().train[:200], 300,
                                 cache_dir=tmp_path_factory.mktemp("tokenizer"))


def tiny_gpt2(bpe):
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(bpe), n_embd=32, n_layer=3, n_head=2, n_positions=64, initializer_range=0.2)).eval()


def tiny_bert(wordpiece, head=True, **extra):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(wordpiece), hidden_size=32, num_hidden_layers=3,
                                     num_attention_heads=2, intermediate_size=64, num_labels=2,
                                     initializer_range=0.2, **extra)
    cls = transformers.BertForSequenceClassification if head else transformers.BertModel
    return cls(config).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory, bpe, wordpiece):
    root = tmp_path_factory.mktemp("models")
    for name, model, tok in (("gpt2", tiny_gpt2(bpe), bpe), ("bert", tiny_bert(wordpiece), wordpiece)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def test_lm_report_last_layer_is_the_models_own_prediction(bpe):
    model = tiny_gpt2(bpe)
    seqs = torch.randint(0, len(bpe), (5, 24), generator=torch.Generator().manual_seed(1))
    r = report((model, bpe), seqs, progress=False)
    num, L = r.numbers, 3
    assert torch.tensor(num["cos"]).shape == (L, L) and torch.tensor(num["cka"]).shape == (L, L)
    for key in ("accuracy", "perplexity", "agreement_with_final", "final_prob", "cos_to_last", "saturation_histogram"):
        assert len(num[key]) == L, key
    assert num["samples"] == 5 * 23  # every position that has a next token
    with torch.no_grad():
        logits = model(seqs).logits[:, :-1]  # the model's own next-token logits
    targets = seqs[:, 1:]
    own_acc = (logits.argmax(-1) == targets).double().mean().item()
    own_ppl = torch.exp(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))).item()
    assert num["accuracy"][-1] == pytest.approx(own_acc, abs=1e-9)
    assert num["perplexity"][-1] == pytest.approx(own_ppl, rel=1e-4)
    own_top = logits.softmax(-1).max(-1).values.double().mean().item()
    assert num["final_prob"][-1] == pytest.approx(own_top, rel=1e-4)
    assert num["agreement_with_final"][-1] == 1.0 and sum(num["saturation_histogram"]) == 5 * 23
    assert num["examples"] and len(num["examples"][0]["positions"][0]["top_tokens"]) == L
    assert 0 < num["flops"]["saved_fraction"] or num["minimal_depth"]["layer"] == L
    t = num["timing"]  # one batch's reading split into the blocks and the heads, against a plain forward
    assert t["batch"] == 0 and min(t["plain_forward_s"], t["blocks_s"], t["read_s"]) > 0 and t["heads_s"] >= 0
    assert t["blocks_over_forward"] == pytest.approx(t["blocks_s"] / t["plain_forward_s"])
    assert "x a plain forward" in r.html() and "the head at every layer" in r.html()
    r2 = report((model, bpe), seqs, batch_size=2, progress=False)
    assert r2.numbers["timing"]["batch"] == 1  # not the first batch, which pays for warm-up


def test_classifier_report_matches_the_models_logits(wordpiece):
    model = tiny_bert(wordpiece)
    texts = [f"{'a fine' if i % 2 else 'a dull'} film, number {i} of the set" for i in range(12)]
    labels = torch.tensor([i % 2 for i in range(12)])
    r = report((model, wordpiece), (texts, labels), progress=False)
    with torch.no_grad():
        own = model(**wordpiece(texts, padding=True, return_tensors="pt")).logits
    assert r.info["labels_used"] and r.numbers["pooling"] == "cls"
    assert r.numbers["accuracy"][-1] == pytest.approx((own.argmax(-1) == labels).double().mean().item())
    assert r.numbers["final_prob"][-1] == pytest.approx(own.softmax(-1).max(-1).values.mean().item(), rel=1e-5)
    assert len(r.numbers["accuracy"]) == 3 and torch.tensor(r.numbers["cka"]).shape == (3, 3)
    assert r.info["structure"]["family"] == "bert"
    html = r._repr_html_()  # inline in Jupyter: the same figures
    assert html.count("<img") == len(r.figures) == 5 and "<html" not in html


def test_bare_backbone_gets_features_and_says_why_there_is_no_readout(wordpiece):
    r = report((tiny_bert(wordpiece, head=False), wordpiece), ["one text", "another one", "and a third"],
               progress=False)
    assert not r.numbers["readout"] and "accuracy" not in r.numbers and r.numbers["pooling"] == "mean"
    assert "no classification head" in r.info["no_readout"] and "No readout" in r.html()
    assert set(r.figures) == {"similarity", "to_last"} and torch.tensor(r.numbers["cos"]).shape == (3, 3)


def test_layer_0_is_the_models_own_embedding_output(wordpiece, bpe, tmp_path):
    """With embeddings=True the similarity starts at the embedding output, layer 0, read in the same forward as
    the blocks: for a bare BERT (post-norm: Hugging Face's hidden states are the raw block outputs) the report's
    (L+1, L+1) COS and CKA are those of Hugging Face's output_hidden_states, mean-pooled over real tokens."""
    from layersim.metrics import cka, cos_similarity
    from layersim.models import adapt

    model = tiny_bert(wordpiece, head=False)
    texts = [f"text number {i} is {'short' if i % 3 else 'a little longer than the others'}" for i in range(9)]
    r = report((model, wordpiece), texts, feature_norm="raw", embeddings=True, progress=False)
    enc = wordpiece(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        own = model(**enc, output_hidden_states=True).hidden_states  # L + 1: embedding output, blocks 1..L
    weights = enc["attention_mask"][None, :, :, None].double()
    pooled = (torch.stack(own).double() * weights).sum(2) / weights.sum(2)  # (L+1, n, d)
    assert r.numbers["first_layer"] == 0 and len(r.numbers["cos_to_last"]) == 4 and not r.numbers["readout"]
    matrix = functools.partial(torch.tensor, dtype=torch.float64)
    assert torch.allclose(matrix(r.numbers["cos"]), cos_similarity(pooled), atol=1e-6)
    assert torch.allclose(matrix(r.numbers["cka"]), cka(pooled), atol=1e-6)
    plain = report((model, wordpiece), texts, feature_norm="raw", progress=False)
    assert torch.allclose(matrix(r.numbers["cos"])[1:, 1:], matrix(plain.numbers["cos"]), atol=1e-9)
    from layersim.extract import extract

    first, again = (extract(HFEncoder(model, wordpiece), texts, pooling="mean", embeddings=True, cache_dir=tmp_path,
                            progress=False) for _ in range(2))
    assert again.from_cache and first.embedding.shape == (1, 9, 32)
    assert torch.allclose(again.embedding.double(), pooled[:1], atol=1e-6) and first.key != extract(
        HFEncoder(model, wordpiece), texts, pooling="mean", cache_dir=tmp_path, progress=False).key
    gpt2 = tiny_gpt2(bpe)  # a causal LM, with padding: layer 0 at every real token
    batch = {"input_ids": torch.randint(0, len(bpe), (2, 7), generator=torch.Generator().manual_seed(3)),
             "attention_mask": torch.tensor([[1] * 7, [1] * 4 + [0] * 3])}
    adapter = adapt(gpt2, bpe)
    with torch.no_grad():
        hidden = adapter.hidden_states(batch)
        first = gpt2(**batch, output_hidden_states=True).hidden_states[0]
        assert hidden.embedded is not None  # recorded in the same forward as the blocks
        assert torch.equal(adapter.embedding_output(hidden, batch)[hidden.mask], first[hidden.mask])


def test_layer_0_of_vision_models_and_the_class_token(wordpiece):
    """A Hugging Face ViT records layer 0 in its forward, a timm ViT embeds alone (begin): both equal the model's
    own embedding output. At the class token layer 0 is one vector for every input: refused with the fix."""
    from layersim.models import adapt

    models = family_models()
    x = models["vit-hf"][1]
    for family in ("vit-hf", "timm-vit"):
        model = models[family][0]
        adapter = adapt(model)
        with torch.no_grad():
            hidden = adapter.hidden_states(x)
            if family == "vit-hf":
                own = model(x, output_hidden_states=True).hidden_states[0]
            else:
                own = model.norm_pre(model._pos_embed(model.patch_embed(x)))
            assert (hidden.embedded is not None) == (family == "vit-hf")
            assert torch.allclose(adapter.embedding_output(hidden, x), own, atol=1e-6)
        r = report(model, x, pooling="mean", embeddings=True, progress=False)
        assert torch.tensor(r.numbers["cka"]).shape == (4, 4) and len(r.numbers["agreement_with_final"]) == 3
        assert "layer 0 is the embedding output" in r.html()
    with pytest.raises(ReportError, match=r"layer 0 \(the embedding output\) at the class token is the same vector "
                                          r"for every input.*use pooling='mean' \(--pooling mean\)"):
        report(models["vit-hf"][0], x, embeddings=True, progress=False)


def test_long_texts_are_truncated_and_counted(wordpiece):
    adapter = HFEncoder(tiny_bert(wordpiece), wordpiece, max_length=16)
    texts = ["short", "word " * 40, "another rather long text " * 10]
    r = report(adapter, texts, progress=False)
    assert r.info["truncated"] == 2 and "2 of 3 texts are longer than 16 tokens" in r.html()


def test_cli_writes_both_files_for_saved_folders(folders, tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("\n".join(D.load_english_corpus().test[:30]))
    for name, data, extra in (("gpt2", str(text), ["--embeddings"]), ("bert", "reviews", [])):
        out = tmp_path / f"report-{name}"
        assert main([str(folders / name), "--data", data, "--n", "6", "--seq-len", "24", "--out", str(out), *extra]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]
        saved = json.loads((out / "report.json").read_text())
        layers = 4 if extra else 3  # with --embeddings, layer 0 in the similarity numbers; the readout stays 1..L
        assert len(saved["cos"]) == len(saved["cka"]) == len(saved["cos_to_last"]) == layers
        assert saved["first_layer"] == 4 - layers and len(saved["accuracy"]) == 3
        assert saved["info"]["inputs"] == 6
        assert (name == "gpt2") == ("perplexity" in saved)


@pytest.mark.parametrize("args, message", [
    (["no-such-model-anywhere"], "cannot load model"),
    (["{bert}", "--data", "digits"], "holds images, but the model reads text"),
    (["{bert}", "--data", "{empty}"], "is empty"),
    (["{gpt2}", "--data", "{images}"], "is a folder, but the model reads text"),
    (["{bert}", "--device", "cuda:7"], "cuda"),
])
def test_bad_input_exits_2_and_leaves_out_untouched(folders, tmp_path, capsys, args, message):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "images").mkdir()
    paths = {"bert": folders / "bert", "gpt2": folders / "gpt2", "empty": tmp_path / "empty.txt",
             "images": tmp_path / "images"}
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    absent, kept = tmp_path / "absent", tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("before")
    for out in (absent, kept):
        assert main(args + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not absent.exists() and [p.name for p in kept.iterdir()] == ["mine.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_a_model_failing_the_self_check_is_refused(wordpiece, tmp_path):
    prenorm = transformers.RobertaPreLayerNormForSequenceClassification(transformers.RobertaPreLayerNormConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=2, pad_token_id=0)).eval()
    with torch.no_grad():
        prenorm.base_model.LayerNorm.weight.uniform_(0.2, 2.0)

    class ReadAsPostNorm(HFEncoder):  # a wrong assumption: no final norm
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.has_final_norm = self.norm_before_pool = False

    unchecked = ReadAsPostNorm(prenorm, check=False)
    with pytest.raises(ReportError, match="fails layersim's self-check"):
        report(unchecked, {"input_ids": torch.ones(2, 4, dtype=torch.long)}, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_command_line_entry_point(folders, tmp_path):
    env = {"PYTHONPATH": str(LIB), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LAYERSIM_PROGRESS": "off"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "layersim.report", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=300, env={**__import__("os").environ, **env})
    bad = run(str(tmp_path / "missing-folder"), "--out", str(tmp_path / "o"))
    assert bad.returncode == 2 and "error: cannot load model" in bad.stderr and not (tmp_path / "o").exists()
    good = run(str(folders / "bert"), "--n", "4", "--out", str(tmp_path / "o"))
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "o" / "report.html").is_file() and (tmp_path / "o" / "report.json").is_file()


@needs_chromium
def test_the_page_shows_every_figure_in_a_browser(bpe, tmp_path):
    r = report((tiny_gpt2(bpe), bpe), "english", n=4, seq_len=24, out=tmp_path / "out", progress=False)
    page = (tmp_path / "out" / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained: nothing fetched
    probe = tmp_path / "out" / "probe.html"
    probe.write_text(page.replace("</body>", """<script>
window.addEventListener('load', () => { for (const img of document.images)
  img.setAttribute('data-loaded', img.complete && img.naturalWidth > 0 ? img.naturalWidth : 0); });
</script></body>"""))
    images = re.findall(r"<img[^>]*>", rendered_dom(probe, budget_ms=5000))
    assert len(images) == len(r.figures) == 6
    for img in images:
        loaded = re.search(r'data-loaded="(\d+)"', img)
        assert loaded and int(loaded.group(1)) > 100, f"figure did not load: {img[:200]}"


@pytest.mark.parametrize("data, message", [
    (None, r"reads audio and there is no offline audio source: give an \(N, 8, 32\) float tensor of log-mel "
           r"features \(a WhisperFeatureExtractor's input_features, padded to 32 frames\) \(got no data\)"),
    ("reviews", r"no offline audio source: .* \(got 'reviews'\)"),
    (torch.randn(3, 8, 30), r"reads an \(N, 8, 32\) float tensor .*; the data are a torch.float32 tensor of shape "
                            r"\(3, 8, 30\)"),
    (torch.ones(3, 8, 32, dtype=torch.long), r"the data are a torch.int64 tensor"),
    (torch.randn(0, 8, 32), r"is empty"),
])
def test_audio_encoder_takes_log_mel_tensors_and_says_what_was_wrong(data, message):
    with pytest.raises(ReportError, match=message):
        report(family_models()["whisper"][0], data, progress=False)


@pytest.mark.parametrize("data, message", [
    (torch.randn(3, 8, 32), r"reads an \(N, samples\) float tensor of raw waveforms, all of one length of at least 20 "
                            r"samples \(a feature extractor's input_values, without padding\); the data are a "
                            r"torch.float32 tensor of shape \(3, 8, 32\)"),
    (torch.randn(3, 19), r"could not be read on this data: .*reads waveforms of at least 20 samples \(the receptive "
                         r"field of its convolutional feature encoder\), got 19"),
    (None, r"reads audio and there is no offline audio source: give an \(N, samples\) float tensor of raw waveforms"),
])
def test_waveform_classifier_takes_waveforms_and_says_what_was_wrong(data, message):
    with pytest.raises(ReportError, match=message):
        report(family_models()["wav2vec2"][0], data, progress=False)


# ---- coverage: every family either gives correct numbers or a clear refusal --------------------------------
@functools.lru_cache(maxsize=1)
def family_models():
    """{family: (model, inputs)} from small configs (norms randomised, as a trained model's)."""
    import timm

    from test_selfcheck import randomize_norms

    torch.manual_seed(0)
    V = 100
    ids = torch.randint(0, V, (4, 10), generator=torch.Generator().manual_seed(2))
    dec = dict(vocab_size=V, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=64, initializer_range=0.2)
    enc = dict(vocab_size=V, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
               initializer_range=0.2, num_labels=3, pad_token_id=0)
    t = transformers
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    vit = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
               intermediate_size=64, num_labels=3)
    bare_vit = {k: v for k, v in vit.items() if k != "num_labels"}
    mels = torch.randn(4, 8, 32, generator=torch.Generator().manual_seed(4))
    whisper_classifier = dict(num_mel_bins=8, d_model=32, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2,
                              decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                              max_source_positions=16, classifier_proj_size=16, num_labels=3)
    wav2vec2 = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, conv_dim=(8, 8),
                    conv_stride=(4, 2), conv_kernel=(8, 4), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
                    classifier_proj_size=16, num_labels=3)
    waves = torch.randn(4, 160, generator=torch.Generator().manual_seed(5))
    models = {
        "gpt2": (t.GPT2LMHeadModel(t.GPT2Config(vocab_size=V, n_embd=32, n_layer=3, n_head=2, n_positions=64,
                                                initializer_range=0.2)), ids),
        "llama": (t.LlamaForCausalLM(t.LlamaConfig(**dec, num_key_value_heads=1)), ids),
        "mistral": (t.MistralForCausalLM(t.MistralConfig(**dec, num_key_value_heads=1)), ids),
        "qwen2": (t.Qwen2ForCausalLM(t.Qwen2Config(**dec, num_key_value_heads=1)), ids),
        "gpt-neox": (t.GPTNeoXForCausalLM(t.GPTNeoXConfig(**dec)), ids),
        "opt": (t.OPTForCausalLM(t.OPTConfig(vocab_size=V, hidden_size=32, num_hidden_layers=3, ffn_dim=64,
                                             num_attention_heads=2, word_embed_proj_dim=16, init_std=0.2,
                                             max_position_embeddings=64)), ids),
        "phi3": (t.Phi3ForCausalLM(t.Phi3Config(**dec, num_key_value_heads=1, pad_token_id=0)), ids),
        "gemma": (t.GemmaForCausalLM(t.GemmaConfig(**dec, num_key_value_heads=1, head_dim=16)), ids),
        "gemma2": (t.Gemma2ForCausalLM(t.Gemma2Config(**dec, num_key_value_heads=1, head_dim=16,
                                                      final_logit_softcapping=2.0)), ids),
        "falcon": (t.FalconForCausalLM(t.FalconConfig(vocab_size=V, hidden_size=32, num_hidden_layers=3,
                                                      num_attention_heads=2, initializer_range=0.2)), ids),
        "bloom": (t.BloomForCausalLM(t.BloomConfig(vocab_size=V, hidden_size=32, n_layer=3, n_head=2,
                                                   initializer_range=0.2)), ids),
        "gpt-j": (t.GPTJForCausalLM(t.GPTJConfig(vocab_size=V, n_embd=32, n_layer=3, n_head=2, rotary_dim=8,
                                                 n_positions=64, initializer_range=0.2)), ids),
        "mpt": (t.MptForCausalLM(t.MptConfig(vocab_size=V, d_model=32, n_layers=3, n_heads=2, max_seq_len=64,
                                             initializer_range=0.2)), ids),
        "cohere": (t.CohereForCausalLM(t.CohereConfig(**dec, num_key_value_heads=1, pad_token_id=0, bos_token_id=1,
                                                      eos_token_id=2)), ids),
        "bart": (t.BartForConditionalGeneration(t.BartConfig(vocab_size=V, d_model=32, encoder_layers=3,
                                                             decoder_layers=1, encoder_attention_heads=2,
                                                             decoder_attention_heads=2, encoder_ffn_dim=64,
                                                             decoder_ffn_dim=64)), ids),
        "bert": (t.BertForSequenceClassification(t.BertConfig(**enc)), ids),
        "deberta-v2": (t.DebertaV2ForSequenceClassification(t.DebertaV2Config(**enc, max_position_embeddings=64)),
                       ids),
        "electra": (t.ElectraForSequenceClassification(t.ElectraConfig(**enc, embedding_size=16,
                                                                       max_position_embeddings=64)), ids),
        "modernbert": (t.ModernBertForSequenceClassification(t.ModernBertConfig(**enc)), ids),
        "xlm-roberta": (t.XLMRobertaForSequenceClassification(t.XLMRobertaConfig(**enc, max_position_embeddings=64)),
                        ids),
        "roberta": (t.RobertaForSequenceClassification(t.RobertaConfig(**enc, max_position_embeddings=64)), ids),
        "distilbert": (t.DistilBertForSequenceClassification(t.DistilBertConfig(
            vocab_size=V, dim=32, n_layers=3, n_heads=2, hidden_dim=64, num_labels=3, pad_token_id=0)), ids),
        "vit-hf": (t.ViTForImageClassification(t.ViTConfig(**vit)), images),
        "vit-hf-bare": (t.ViTModel(t.ViTConfig(**vit)), images),
        "deit-hf": (t.DeiTForImageClassification(t.DeiTConfig(**vit)), images),
        "deit-hf-teacher": (t.DeiTForImageClassificationWithTeacher(t.DeiTConfig(**vit)), images),
        "dinov2": (t.Dinov2ForImageClassification(t.Dinov2Config(**vit)), images),
        "dinov2-bare": (t.Dinov2Model(t.Dinov2Config(**vit)), images),
        "dinov2-registers": (t.Dinov2WithRegistersForImageClassification(
            t.Dinov2WithRegistersConfig(**vit, num_register_tokens=2)), images),
        "dinov2-registers-bare": (t.Dinov2WithRegistersModel(t.Dinov2WithRegistersConfig(**vit, num_register_tokens=2)),
                                  images),
        "clip-vision": (t.CLIPVisionModel(t.CLIPVisionConfig(**bare_vit)), images),
        "clip-vision-projection": (t.CLIPVisionModelWithProjection(t.CLIPVisionConfig(**bare_vit, projection_dim=16)),
                                   images),
        "siglip-vision": (t.SiglipVisionModel(t.SiglipVisionConfig(**bare_vit)), images),
        "siglip": (t.SiglipForImageClassification(t.SiglipConfig(vision_config=bare_vit, num_labels=3)), images),
        "t5": (t.T5ForConditionalGeneration(t.T5Config(vocab_size=V, d_model=32, d_kv=16, d_ff=64, num_layers=3,
                                                         num_decoder_layers=1, num_heads=2)), ids),
        "t5-encoder": (t.T5EncoderModel(t.T5Config(vocab_size=V, d_model=32, d_kv=16, d_ff=64, num_layers=3,
                                                   num_heads=2)), ids),
        "whisper": (t.WhisperForConditionalGeneration(t.WhisperConfig(
            vocab_size=V, num_mel_bins=8, d_model=32, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16,
            max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)),
            mels),
        "whisper-classifier": (t.WhisperForAudioClassification(t.WhisperConfig(**whisper_classifier)), mels),
        "whisper-classifier-weighted": (t.WhisperForAudioClassification(t.WhisperConfig(
            **whisper_classifier, use_weighted_layer_sum=True)), mels),
        "wav2vec2": (t.Wav2Vec2ForSequenceClassification(t.Wav2Vec2Config(**wav2vec2)), waves),
        "hubert-stable": (t.HubertForSequenceClassification(t.HubertConfig(**wav2vec2, do_stable_layer_norm=True)),
                          waves),
        "wav2vec2-weighted": (t.Wav2Vec2ForSequenceClassification(
            t.Wav2Vec2Config(**wav2vec2, use_weighted_layer_sum=True)), waves),
        "timm-vit": (timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                       embed_dim=32, depth=3, num_heads=2, num_classes=3), images),
        "timm-deit-distilled": (timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32,
                                                  patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=3),
                                images),
    }
    return {name: (randomize_norms(model), x) for name, (model, x) in models.items()}


FAMILIES = ["gpt2", "llama", "mistral", "qwen2", "gpt-neox", "opt", "phi3", "gemma", "gemma2", "falcon", "bloom",
            "gpt-j", "mpt", "cohere", "bart", "bert", "roberta", "distilbert", "deberta-v2", "electra", "modernbert", "xlm-roberta",
            "vit-hf",
            "vit-hf-bare", "deit-hf", "deit-hf-teacher", "dinov2", "dinov2-bare", "dinov2-registers",
            "dinov2-registers-bare", "clip-vision", "clip-vision-projection", "siglip-vision", "siglip", "t5",
            "t5-encoder", "whisper", "whisper-classifier", "whisper-classifier-weighted", "wav2vec2", "hubert-stable",
            "wav2vec2-weighted", "timm-vit", "timm-deit-distilled"]
LMS = ("gpt2", "llama", "mistral", "qwen2", "gpt-neox", "opt", "phi3", "gemma", "gemma2", "falcon", "bloom", "gpt-j",
       "mpt")
REFUSED = {"cohere": "CohereForCausalLM rescales its logits after lm_head (logit_scale=0.0625), which layersim "
                     "does not reproduce yet: add that step to HFCausalLM._head",
           "whisper-classifier-weighted": "WhisperForAudioClassification is configured with use_weighted_layer_sum="
                                          "True: its head reads a softmax-weighted sum of every layer's hidden states",
           "wav2vec2-weighted": "Wav2Vec2ForSequenceClassification is configured with use_weighted_layer_sum=True",
           "bart": "BartForConditionalGeneration belongs to an encoder-decoder family (bart) whose layers layersim "
                   "does not read; of encoder-decoder models it reads the encoder stack of T5EncoderModel"}
# features and similarity only: what the report says instead of a readout
BARE = {"vit-hf-bare": "bare ViTModel without a classification head", "dinov2-bare": "bare Dinov2Model without",
        "clip-vision": "bare CLIPVisionModel without a classification head",
        "dinov2-registers-bare": "bare Dinov2WithRegistersModel without a classification head",
        "clip-vision-projection": "bare CLIPVisionModelWithProjection without a classification head (it returns an "
                                  "image embedding, visual_projection(post_layernorm(h_L[CLS])), not a classifier's",
        "siglip-vision": "bare SiglipVisionModel without a classification head",
        "t5": "read as the encoder stack of an encoder-decoder model (t5): its decoder, not a classifier, reads it",
        "t5-encoder": "T5EncoderModel is read as the encoder stack", "whisper": "encoder-decoder model (whisper)"}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_correct_numbers_or_a_clear_refusal(family):
    model, x = family_models()[family]
    if family in REFUSED:
        with pytest.raises(ReportError, match=re.escape(REFUSED[family])):
            report(model, x, progress=False)
        return
    labels = torch.tensor([0, 1, 2, 1])
    r = report(model, x if family in LMS else (x, labels), progress=False)
    num = r.numbers
    assert torch.tensor(num["cos"]).shape == torch.tensor(num["cka"]).shape == (3, 3)
    if family in BARE:  # checked against the model's own output features when made (the self-check)
        assert not num["readout"] and BARE[family] in r.info["no_readout"] and "accuracy" not in num
        return
    with torch.no_grad():
        own = model(x).logits if family not in ("timm-vit", "timm-deit-distilled") else model(x)
    if family in LMS:  # layer L is the model's own next-token prediction
        own, targets = own[:, :-1], x[:, 1:]
        assert num["accuracy"][-1] == pytest.approx((own.argmax(-1) == targets).double().mean().item())
    else:
        assert num["accuracy"][-1] == pytest.approx((own.argmax(-1) == labels).double().mean().item())
    assert num["final_prob"][-1] == pytest.approx(own.softmax(-1).max(-1).values.double().mean().item(), rel=1e-4)
    assert len(num["accuracy"]) == 3 and num["agreement_with_final"][-1] == 1.0
