"""Image sources: scikit-learn's digits, Fashion-MNIST (IDX files), CIFAR-10 / CIFAR-100 (python pickles) and
any ImageFolder tree (ImageNet). Every loader returns an `ImageData` whose images are float tensors (C, H, W)
in [0, 1]."""
from __future__ import annotations

import gzip
import os
import pickle
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

from ..storage import default_cache_dir
from ..validate import whole_number
from .common import ImageData, SourceNotFoundError, _check_count, _split_indices, _subsample

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]



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
    seed = whole_number(seed, "seed", low=0)
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
    seed = whole_number(seed, "seed", low=0)
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
    seed = whole_number(seed, "seed", low=0)
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
