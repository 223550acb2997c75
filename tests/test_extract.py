"""Per-layer extraction: values against the models' own outputs, the disk cache, and bad input."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in these tests may touch the network

import json
import warnings

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoTokenizer

import layersim.models.readers as readers_module
from layersim.extract import extract, extract_features
from layersim.models import VisionTransformer, ViTConfig, adapt, load_model, minilm_path

transformers.logging.set_verbosity_error()
CFG = ViTConfig(image_size=28, in_chans=1, patch_size=7, depth=4, width=32, heads=4, num_classes=6)
TEXTS = ["the cat sat on the mat", "a short one", "every token of a rather longer sentence counts",
         "one more", "and the last line of this tiny corpus"]


def entries(cache_dir):
    """The cache entries in a folder (the lock files of `extract` live apart, in .locks/)."""
    return sorted(p for p in cache_dir.iterdir() if p.name != ".locks")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def vit():
    torch.manual_seed(0)
    return VisionTransformer(CFG).eval()


@pytest.fixture
def image_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 1, 28, 28, generator=g)
    y = torch.randint(0, 6, (50,), generator=g)
    return x, y


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=3,
                                      num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                      max_position_embeddings=64, initializer_range=0.2)
    return adapt(transformers.LlamaForCausalLM(config).eval(), tokenizer)


def test_image_extraction_matches_the_model(vit, image_data):
    x, y = image_data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    out = extract(vit, loader, pooling="cls", progress=False)
    L, n, C = CFG.depth, 50, CFG.num_classes
    assert out.layers == [1, 2, 3, 4]
    assert out.features.shape == (L, n, CFG.width) and out.features.dtype == torch.float32
    assert out.logits.shape == (L, n, C) and out.preds.shape == (L, n) and out.final_prob.shape == (L, n)
    with torch.no_grad():
        hidden = vit.forward_intermediates(x)
        assert torch.allclose(out.features, hidden[:, :, 0], atol=1e-5)
        assert torch.allclose(out.logits, vit.head(vit.norm(hidden[:, :, 0])), atol=1e-5)  # head(norm(CLS_l)) by hand
        assert torch.allclose(out.logits[-1], vit(x), atol=1e-5)
    assert torch.equal(out.labels, y)
    assert torch.equal(out.preds, out.logits.argmax(-1))
    probs = out.logits.softmax(-1)
    final = out.logits[-1].argmax(-1)
    assert torch.allclose(out.final_prob, probs[:, torch.arange(n), final], atol=1e-6)
    assert torch.allclose(out.final_prob[-1], probs[-1].max(-1).values, atol=1e-6)
    assert torch.allclose(out.label_logprob, probs[:, torch.arange(n), y].log(), atol=1e-5)
    # the same from a tensor with labels=, and a Dataset: independent of how the data comes
    again = extract(vit, x, labels=y, batch_size=7, progress=False)
    assert torch.allclose(again.features, out.features, atol=1e-5) and torch.equal(again.labels, y)
    subset = extract(vit, torch.utils.data.TensorDataset(x, y), layers=[4, 2], pooling="mean", progress=False)
    assert subset.layers == [4, 2]
    assert torch.allclose(subset.features, hidden[[3, 1], :, 1:].mean(2), atol=1e-5)
    assert torch.allclose(subset.final_prob[0], out.final_prob[-1], atol=1e-6)  # final = layer 4 still


def test_cache_roundtrip_and_key(vit, image_data, tmp_path):
    x, y = image_data
    first = extract(vit, x, labels=y, cache_dir=tmp_path, batch_size=16, progress=False)
    assert not first.from_cache and first.path.parent == tmp_path
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["key"] == first.key and set(meta["fields"]) >= {"features", "logits", "preds", "labels"}
    second = extract(vit, x, labels=y, cache_dir=tmp_path, batch_size=16, progress=False)
    assert second.from_cache and second.key == first.key
    for name in ("features", "logits", "preds", "final_prob", "labels", "label_logprob"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    mapped = extract(vit, x, labels=y, cache_dir=tmp_path, batch_size=16, progress=False, mmap=True)
    assert mapped.from_cache and torch.equal(mapped.features, first.features)
    # anything that changes the result changes the key
    assert extract(vit, x, labels=y, cache_dir=tmp_path, batch_size=16, pooling="mean", progress=False).key != first.key
    assert extract(vit, x[:-1], labels=y[:-1], cache_dir=tmp_path, batch_size=16, progress=False).key != first.key
    half = extract(vit, x, labels=y, cache_dir=tmp_path, batch_size=16, dtype=torch.float16, progress=False)
    assert half.key != first.key and half.features.dtype == torch.float16
    # a model_key replaces hashing the weights, but the adapter's settings still count
    from layersim.models import ViTAdapter
    named = extract(vit, x, cache_dir=tmp_path, model_key="vit-ckpt-1", progress=False)
    no_norm = extract(ViTAdapter(vit, final_norm=False), x, cache_dir=tmp_path, model_key="vit-ckpt-1",
                      progress=False)
    assert named.key != no_norm.key and not torch.allclose(named.logits, no_norm.logits)
    with torch.no_grad():
        vit.head.bias[0] += 1.0  # new weights: must not be served from the cache
    changed = extract(vit, x, labels=y, cache_dir=tmp_path, batch_size=16, progress=False)
    assert not changed.from_cache and changed.key != first.key
    assert not torch.allclose(changed.logits, first.logits)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp", ".trash"))]


META_DAMAGE = {"meta-empty-object": lambda m: {}, "meta-list": lambda m: [], "meta-no-fields": lambda m: {
    k: v for k, v in m.items() if k != "fields"}, "meta-field-without-bytes": lambda m: {
    **m, "fields": {k: {kk: vv for kk, vv in v.items() if kk != "bytes"} for k, v in m["fields"].items()}},
    "meta-fields-empty": lambda m: {**m, "fields": {}}}


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta", "missing", *META_DAMAGE])
def test_corrupt_cache_entry_is_rebuilt(vit, image_data, tmp_path, damage):
    x, y = image_data
    first = extract(vit, x, labels=y, cache_dir=tmp_path, progress=False)
    features = first.path / "features.npy"
    if damage in META_DAMAGE:
        meta = json.loads((first.path / "meta.json").read_text())
        (first.path / "meta.json").write_text(json.dumps(META_DAMAGE[damage](meta)))
    elif damage == "truncate":
        features.write_bytes(features.read_bytes()[:-100])
    elif damage == "flip":
        data = bytearray(features.read_bytes())
        data[-5] ^= 0xFF
        features.write_bytes(bytes(data))
    elif damage == "meta":
        (first.path / "meta.json").write_text("{not json")
    else:
        (first.path / "logits.npy").unlink()
    with pytest.warns(RuntimeWarning, match="corrupt"):
        rebuilt = extract(vit, x, labels=y, cache_dir=tmp_path, progress=False)
    assert not rebuilt.from_cache
    assert torch.equal(rebuilt.features, first.features) and torch.equal(rebuilt.logits, first.logits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extract(vit, x, labels=y, cache_dir=tmp_path, progress=False).from_cache


def test_failed_extraction_leaves_no_entry(vit, image_data, tmp_path):
    x, _ = image_data

    class Failing(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield x[:10]
            raise RuntimeError("disk on fire")

    loader = torch.utils.data.DataLoader(Failing(), batch_size=None)
    with pytest.raises(RuntimeError, match="disk on fire"):
        extract(vit, loader, cache_dir=tmp_path, data_key="failing", progress=False)
    assert entries(tmp_path) == []


def test_entry_finished_first_by_another_process_is_kept(vit, image_data, tmp_path):
    import shutil

    x, _ = image_data
    first = extract(vit, x, cache_dir=tmp_path, data_key="images", progress=False)
    theirs = tmp_path.parent / "theirs"
    shutil.copytree(first.path, theirs)
    shutil.rmtree(first.path)
    (theirs / "marker").write_text("written by the other process")

    class OtherProcessFinishesMeanwhile(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield x
            shutil.copytree(theirs, first.path)  # while we are still computing

    loader = torch.utils.data.DataLoader(OtherProcessFinishesMeanwhile(), batch_size=None)
    second = extract(vit, loader, cache_dir=tmp_path, data_key="images", progress=False)
    assert (second.path / "marker").exists()  # theirs was kept, ours discarded
    assert torch.equal(second.features, first.features)
    assert [p.name for p in entries(tmp_path)] == [first.path.name]


def test_train_mode_restored_and_no_hooks(tiny_llama, vit, image_data):
    x, _ = image_data
    vit.train()
    extract(vit, x[:8], progress=False)
    assert vit.training and all(m.training for m in vit.modules())
    model = tiny_llama.model
    model.train()
    extract(tiny_llama, TEXTS, pooling="tokens", progress=False)
    assert all(m.training for m in model.modules())
    assert len(model.model.norm._forward_pre_hooks) == 0  # ours, on the final norm, is gone
    # transformers installs its own output-capturing hooks once; we add none that stay
    counts = [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()]
    extract(tiny_llama, TEXTS, pooling="tokens", progress=False)
    assert [(len(m._forward_pre_hooks), len(m._forward_hooks)) for m in model.modules()] == counts
    model.eval()


def test_language_model_tokens(tiny_llama, monkeypatch):
    adapter = tiny_llama
    out = extract(adapter, TEXTS, pooling="tokens", batch_size=2, progress=False)
    enc = adapter.tokenizer(TEXTS, padding=True, return_tensors="pt")
    lengths = enc["attention_mask"].sum(1)
    n = int((lengths - 1).sum())
    V = adapter.num_classes
    assert out.features.shape == (3, n, 32) and out.logits is None
    assert out.topk_ids.shape == (3, n, 5) and out.topk_probs.shape == (3, n, 5)
    # independent reference: the model's own logits and loss, one sequence at a time (no padding)
    logits, targets, losses = [], [], []
    with torch.no_grad():
        for text in TEXTS:
            ids = adapter.tokenizer([text], return_tensors="pt")["input_ids"]
            result = adapter.model(input_ids=ids, labels=ids)
            logits.append(result.logits[0, :-1])
            targets.append(ids[0, 1:])
            losses.append(result.loss * (ids.shape[1] - 1))
    logits, targets = torch.cat(logits), torch.cat(targets)
    assert torch.equal(out.labels, targets)
    assert torch.equal(out.preds[-1], logits.argmax(-1))
    assert torch.equal(out.topk_ids[..., 0], out.preds)
    probs = logits.softmax(-1)
    assert torch.allclose(out.final_prob[-1], probs.max(-1).values, atol=1e-5)
    assert torch.allclose(out.topk_probs[-1, :, 0], probs.max(-1).values, atol=1e-5)
    # label log-probabilities of the last layer give the model's own cross-entropy (perplexity)
    assert torch.allclose(-out.label_logprob[-1].sum(), torch.stack(losses).sum(), rtol=1e-5)
    assert V == len(adapter.tokenizer)
    # chunked vocabulary readout gives the same numbers as one chunk
    monkeypatch.setattr(readers_module, "LOGIT_ELEMENTS_PER_CHUNK", 3 * V)
    chunked = extract(adapter, TEXTS, pooling="tokens", batch_size=2, progress=False)
    for name in ("preds", "topk_ids", "labels"):
        assert torch.equal(getattr(chunked, name), getattr(out, name)), name
    assert torch.allclose(chunked.label_logprob, out.label_logprob, atol=1e-5)
    # the final norm on the features, as the design's SmolLM2 analysis uses
    normed = extract(adapter, TEXTS, pooling="tokens", readout=False, feature_norm="normed", progress=False)
    with torch.no_grad():
        assert torch.allclose(normed.features, adapter.norm(out.features), atol=1e-5)


def test_extract_features_contract_with_minilm(tmp_path):
    encoder = load_model("minilm-l6")
    feats = extract_features(encoder, TEXTS, pooling="mean", batch_size=2, progress=False)
    assert feats.shape == (6, 5, 384) and feats.dtype == torch.float32
    with torch.no_grad():
        one_batch = encoder.layers(TEXTS, "mean")
    assert torch.allclose(feats, one_batch, atol=1e-5)  # batching and padding do not change the features
    cls = extract_features(encoder, TEXTS, pooling="cls", batch_size=3, progress=False)
    assert torch.allclose(cls, encoder.layers(TEXTS, "cls"), atol=1e-5)
    cached = extract_features(encoder, TEXTS, pooling="mean", batch_size=2, progress=False, cache_dir=tmp_path)
    assert torch.equal(cached, feats)
    entry = entries(tmp_path)[0]
    assert entry.name.startswith("minilm-l6-mean-") and np.load(entry / "features.npy").shape == (6, 5, 384)


def test_text_cache_hits_with_a_fresh_tokenizer(tmp_path):
    """Tokenising changes a fast tokenizer's padding state; the cache key must not depend on it."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())  # never used yet
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, num_labels=2)
    encoder = adapt(transformers.BertForSequenceClassification(config).eval(), tokenizer)
    first = extract(encoder, TEXTS, labels=[0, 1, 0, 1, 1], pooling="mean", cache_dir=tmp_path, progress=False)
    second = extract(encoder, TEXTS, labels=[0, 1, 0, 1, 1], pooling="mean", cache_dir=tmp_path, progress=False)
    assert second.from_cache and second.key == first.key
    assert first.logits.shape == (2, 5, 2) and torch.equal(second.logits, first.logits)


def test_bad_input(vit, image_data, tiny_llama, tmp_path):
    x, y = image_data
    with pytest.raises(ValueError, match=r"numbered 1\.\.4"):
        extract(vit, x, layers=[0], progress=False)
    with pytest.raises(ValueError, match="pooling must be one of"):
        extract(vit, x, pooling="max", progress=False)
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\)"):
        extract(vit, torch.randn(4, 3, 32, 32), progress=False)
    with pytest.raises(ValueError, match="labels has 3 entries"):
        extract(vit, x, labels=y[:3], progress=False)
    with pytest.raises(ValueError, match="per token"):
        extract(vit, x, pooling="tokens", readout=True, progress=False)
    with pytest.raises(ValueError, match="one token at a time"):
        extract(tiny_llama, TEXTS, pooling="mean", readout=True, progress=False)
    with pytest.raises(ValueError, match="one-shot iterator"):
        extract(vit, (b for b in [x[:4]]), cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="empty"):
        extract(vit, [], progress=False)
    with pytest.raises(ValueError, match="dtype"):
        extract(vit, x, dtype=torch.int32, progress=False)
    with pytest.raises(ValueError, match="list of strings"):
        extract(tiny_llama, x, pooling="tokens", progress=False)


def test_leftovers_of_killed_writers_are_cleaned_up(vit, image_data, tmp_path):
    """A writer killed mid-write leaves its temporary folder; a replaced entry its trash: the next call
    removes both (the temporary folder only once its writer's process is gone)."""
    import subprocess

    x, y = image_data
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    orphan = tmp_path / f".tmp-entry-{dead.pid}-deadbeef"
    (orphan / "features.0.part").parent.mkdir(parents=True)
    (orphan / "features.0.part").write_bytes(b"half")
    live = tmp_path / f".tmp-other-{os.getpid()}-cafecafe"  # a writer that still runs: left alone
    live.mkdir()
    trash = tmp_path / ".trash-old-entry-1-abcdabcd"
    trash.mkdir()
    os.utime(trash, (0, 0))
    extract(vit, x, labels=y, cache_dir=tmp_path, progress=False)
    names = {p.name for p in tmp_path.iterdir()}
    assert orphan.name not in names and trash.name not in names and live.name in names


def test_bad_batch_size_and_labels(vit, image_data):
    x, y = image_data
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            extract(vit, x, batch_size=bad, progress=False)
    with pytest.raises(ValueError, match="integer class indices"):
        extract(vit, x, labels=y.float() + 0.5, progress=False)
    with pytest.raises(ValueError, match=r"class indices in \[0, 6\)"):
        extract(vit, x, labels=y + 6, progress=False)
    nan_images = x.clone()
    nan_images[3, 0, 5, 5] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        extract(vit, nan_images, progress=False)
    with pytest.raises(ValueError, match="feature_norm"):
        extract(vit, x, feature_norm="yes", progress=False)


def test_authors_gpt2_feature_convention(tiny_llama):
    """feature_norm="hf": layers 1..L-1 raw, layer L normed, as Hugging Face's output_hidden_states."""
    raw = extract(tiny_llama, TEXTS, pooling="tokens", progress=False)
    hf = extract(tiny_llama, TEXTS, pooling="tokens", feature_norm="hf", progress=False)
    assert torch.equal(hf.features[:-1], raw.features[:-1])
    with torch.no_grad():
        assert torch.allclose(hf.features[-1], tiny_llama.norm(raw.features[-1]), atol=1e-6)
        enc = tiny_llama.encode(TEXTS)
        out = tiny_llama.model(**enc, output_hidden_states=True)
    hidden = tiny_llama.hidden_states(TEXTS)
    mask = tiny_llama.sample_mask(hidden, "tokens")
    assert torch.allclose(hf.features[-1], out.hidden_states[-1][mask], atol=1e-5)
