"""Per-layer features and per-layer readouts over a data set, streamed to a disk cache.

>>> from layersim.models import load_model
>>> from layersim.extract import extract, extract_features
>>> enc = load_model("minilm-l6")
>>> feats = extract_features(enc, texts, pooling="mean")              # (L, n, d) float32
>>> out = extract(vit, test_loader, pooling="cls", cache_dir="data/cache/features")
>>> out.features, out.logits, out.preds, out.final_prob, out.labels  # (L,n,d) (L,n,C) (L,n) (L,n) (n,)

`extract` runs the model once per batch under ``torch.no_grad()`` in eval mode (restoring the train/eval
state afterwards), pools each block's tokens into one vector per sample, applies the model's own
last-layer classifier to every layer, and keeps only those per-sample results: one batch of hidden
states is in memory at a time.

With ``cache_dir`` the results are streamed, batch by batch and layer by layer, into part files in a
temporary folder next to the cache entry; at the end they are assembled into one ``.npy`` per field,
stacked layer-first, with a ``meta.json`` that records their shapes, sizes and checksums, and the folder
is renamed into place (atomic: a reader sees a whole entry or none, and two processes computing the same
entry do not clash). The entry is keyed by a hash of the model's weights and settings, the data (its
content, or a `data_key` you give), the pooling, the layers, the readout settings, the dtype and the batch
size, so a second call with the same arguments loads it. A corrupt or truncated entry (bad checksum,
missing file, unreadable metadata) is rebuilt with a warning. Without ``cache_dir`` the results are
collected in memory.

When C is a vocabulary (a causal LM), full per-layer logits would be (L, n, V), so by default only their
summaries are kept: top-k ids and probabilities, the argmax, the probability given at each layer to the
final layer's prediction, and the log-probability of the label (the next token) for perplexity.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .models import LayerAdapter, adapt, as_reader, eval_mode, layer_indices, read_stats
from . import progress as _progress
from .storage import (atomic_folder, atomic_write_json, clean_leftovers, file_checksum, hash_tensor, load_or_build,
                      stable_hash, weights_fingerprint)
from .validate import ArgumentTypeError, describe, tensor_arg, whole_number

CACHE_FORMAT = 2
# the model's final norm on the features: "raw" block outputs, "normed" (every layer, as the model reads layer L)
# or "hf" (layer L only, as Hugging Face's output_hidden_states and the authors' GPT-2 code)
FEATURE_NORMS = ("raw", "normed", "hf")
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}


@dataclass
class Extraction:
    """Result of `extract`. Layers are stacked first, in the order of `layers` (numbered 1..L).

    features: (L', n, d) pooled block outputs.
    labels: (n,) class labels from the data, or next-token ids (causal LM, pooling='tokens'); else None.
    logits: (L', n, C) readout logits per layer (classifiers; None for a vocabulary unless keep_logits).
    preds: (L', n) argmax of the readout per layer.
    final_prob: (L', n) probability that each layer's readout gives to the final layer's prediction.
    topk_ids, topk_probs: (L', n, k) the k most probable classes/tokens per layer and their probabilities.
    label_logprob: (L', n) log-probability of the label at each layer (perplexity = exp(-mean)).
    embedding: (1, n, d) the pooled embedding output ("layer 0", the input of block 1), with embeddings=True.
    """

    layers: list[int]
    features: torch.Tensor
    labels: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    preds: torch.Tensor | None = None
    final_prob: torch.Tensor | None = None
    topk_ids: torch.Tensor | None = None
    topk_probs: torch.Tensor | None = None
    label_logprob: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    key: str = ""
    path: Path | None = None
    from_cache: bool = False
    settings: dict = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return self.features.shape[1]


FIELDS = ("features", "labels", "logits", "preds", "final_prob", "topk_ids", "topk_probs", "label_logprob",
          "embedding")


# ---- data -----------------------------------------------------------------------------------------------
def _is_texts(data) -> bool:
    return isinstance(data, (list, tuple)) and len(data) > 0 and all(isinstance(s, str) for s in data)


def _split_batch(item):
    """A batch from a loader -> (inputs, labels or None)."""
    if isinstance(item, torch.Tensor) or _is_texts(item):
        return item, None
    if isinstance(item, dict):
        if "input_ids" in item:
            return {k: v for k, v in item.items() if k != "labels"}, item.get("labels")
        raise ValueError(f"a dict batch needs 'input_ids' (tokenised text), got keys {sorted(item)}")
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return item[0], item[1]
    raise ValueError(f"cannot read a batch of type {type(item).__name__}: expected a tensor of images, a list of "
                     "strings, an (inputs, labels) pair or a dict with 'input_ids'")


def check_batch_size(batch_size) -> int:
    return whole_number(batch_size, "batch_size", low=1)


def iter_batches(data, batch_size: int, labels=None) -> Iterator[tuple]:
    """(inputs, labels or None) batches from: a list of strings, a tensor of images (N, C, H, W), a torch
    Dataset of (x, y) pairs, or any iterable of batches (a DataLoader)."""
    check_batch_size(batch_size)
    if labels is not None:
        labels = torch.as_tensor(labels)
    if isinstance(data, str):
        raise ValueError("expected a list of strings, got a single string; wrap it in a list")
    if _is_texts(data) or isinstance(data, torch.Tensor):
        n = len(data)
        if labels is not None and len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries but data has {n} samples")
        for start in range(0, n, batch_size):
            yield data[start:start + batch_size], None if labels is None else labels[start:start + batch_size]
        return
    if labels is not None:
        raise ValueError("labels= is only for a list of texts or a tensor; a loader yields (inputs, labels)")
    if not isinstance(data, torch.utils.data.Dataset) and not hasattr(data, "__iter__"):
        raise ArgumentTypeError(f"data must be a list of strings, a tensor of images, a Dataset or an iterable of "
                                f"batches, got {describe(data)}")
    if isinstance(data, torch.utils.data.Dataset):  # samples, not batches: batch them in order
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    if isinstance(data, (list, tuple)) and len(data) == 0:
        raise ValueError("data is empty")
    for item in data:
        yield _split_batch(item)


def _num_batches(data, batch_size: int) -> int | None:
    if _is_texts(data) or isinstance(data, torch.Tensor):
        return math.ceil(len(data) / batch_size)
    try:
        return len(data)
    except TypeError:
        return None


def data_fingerprint(data, batch_size: int, labels=None) -> str:
    """blake2b hash of every batch's content (and labels). Iterates over `data` once."""
    reusable = isinstance(data, (torch.Tensor, list, tuple, torch.utils.data.Dataset))
    if not reusable and iter(data) is data:
        raise ValueError("data is a one-shot iterator, which cannot be hashed and then read again; pass a "
                         "DataLoader or list, or give data_key='...' naming the data selection")
    digest = hashlib.blake2b(digest_size=16)
    for inputs, y in iter_batches(data, batch_size, labels):
        if isinstance(inputs, torch.Tensor):
            hash_tensor(digest, inputs)
        elif isinstance(inputs, dict):
            for k in sorted(inputs):
                digest.update(k.encode())
                hash_tensor(digest, torch.as_tensor(inputs[k]))
        else:
            digest.update("\0".join(inputs).encode() + b"\1")
        if y is not None:
            hash_tensor(digest, torch.as_tensor(y))
    return digest.hexdigest()


# ---- disk store -----------------------------------------------------------------------------------------
class _Store:
    """Streams per-batch arrays into part files (one per field and layer), then assembles one layer-first
    ``.npy`` per field. Memory: one batch, and at assembly one layer of one field."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.fields: dict[str, dict] = {}

    def add(self, name: str, array: torch.Tensor, layered: bool) -> None:
        """array: (L', b, ...) if layered else (b, ...)."""
        array = array.detach().to("cpu").contiguous().numpy()
        info = self.fields.setdefault(name, {"dtype": array.dtype.str, "rest": list(array.shape[2 if layered else 1:]),
                                             "layers": array.shape[0] if layered else 0, "rows": 0})
        parts = array if layered else array[None]
        for i, part in enumerate(parts):
            with open(self.folder / f"{name}.{i}.part", "ab") as f:
                f.write(part.tobytes())
        info["rows"] += parts.shape[1]

    def finish(self) -> dict:
        """Assemble the .npy files (header, then the parts layer by layer), hashing what is written, and
        delete the parts; -> {field: {shape, dtype, bytes, blake2b}}."""
        meta = {}
        for name, info in self.fields.items():
            dtype = np.dtype(info["dtype"])
            shape = ([info["layers"]] if info["layers"] else []) + [info["rows"]] + info["rest"]
            path = self.folder / f"{name}.npy"
            part_bytes = info["rows"] * int(np.prod(info["rest"], dtype=np.int64)) * dtype.itemsize
            digest = hashlib.blake2b(digest_size=16)
            with open(path, "wb") as out:
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                              "fortran_order": False, "shape": tuple(shape)})
                out.write(header.getvalue())
                digest.update(header.getvalue())
                for i in range(max(info["layers"], 1)):
                    part = self.folder / f"{name}.{i}.part"
                    if part.stat().st_size != part_bytes:
                        raise RuntimeError(f"{part.name} has {part.stat().st_size} bytes, expected {part_bytes}")
                    with open(part, "rb") as f:
                        for block in iter(lambda: f.read(1 << 22), b""):
                            out.write(block)
                            digest.update(block)
                    part.unlink()
            meta[name] = {"shape": shape, "dtype": dtype.str, "bytes": path.stat().st_size,
                          "blake2b": digest.hexdigest()}
        return meta


class _MemoryStore:
    """The same interface as `_Store`, kept in memory (used when there is no cache folder)."""

    def __init__(self):
        self.fields: dict[str, list] = {}
        self.layered: dict[str, bool] = {}

    def add(self, name: str, array: torch.Tensor, layered: bool) -> None:
        self.fields.setdefault(name, []).append(array.detach().to("cpu"))
        self.layered[name] = layered

    def finish(self) -> dict:
        return {name: torch.cat(chunks, dim=1 if self.layered[name] else 0) for name, chunks in self.fields.items()}


class CorruptEntry(Exception):
    pass


def _read_entry(folder: Path, key: str, *, mmap: bool, verify: bool) -> dict:
    """Load a complete entry -> {field: tensor}; raise CorruptEntry saying what is wrong."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise CorruptEntry(f"meta.json unreadable ({e})") from e
    if not isinstance(meta, dict) or meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
        raise CorruptEntry("meta.json belongs to another entry or cache format, or is not an object")
    fields = meta.get("fields")
    if not isinstance(fields, dict) or "features" not in fields:
        raise CorruptEntry("meta.json lists no 'features' field")
    tensors = {}
    for name, info in fields.items():
        if name not in FIELDS or not isinstance(info, dict) or not {"bytes", "shape", "dtype", "blake2b"} <= set(info):
            raise CorruptEntry(f"meta.json describes field {name!r} incompletely")
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise CorruptEntry(f"{path.name} is missing")
        if path.stat().st_size != info["bytes"]:
            raise CorruptEntry(f"{path.name} has {path.stat().st_size} bytes, expected {info['bytes']} (truncated?)")
        if verify and file_checksum(path) != info["blake2b"]:
            raise CorruptEntry(f"{path.name} does not match its checksum")
        try:
            array = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CorruptEntry(f"{path.name} unreadable ({e})") from e
        if list(array.shape) != info["shape"] or array.dtype.str != info["dtype"]:
            raise CorruptEntry(f"{path.name} has shape {array.shape}, expected {info['shape']}")
        tensors[name] = torch.from_numpy(array)
    return {"tensors": tensors, "meta": meta}


# ---- extraction -----------------------------------------------------------------------------------------
def check_feature_norm(mode) -> str:
    if isinstance(mode, bool) or mode not in FEATURE_NORMS:
        hint = f" ({'normed' if mode else 'raw'!r} is what {mode!r} meant)" if isinstance(mode, bool) else ""
        raise ValueError(f"feature_norm must be one of {FEATURE_NORMS}, got {mode!r}{hint}")
    return mode


def normed_features(adapter: LayerAdapter, features: torch.Tensor, mode: str, layers=None) -> torch.Tensor:
    """(L', n, d) features of 1-based `layers` (default 1..L') under a convention for the model's final norm
    (`FEATURE_NORMS`): "raw" as they are, "normed" the final norm on every layer, "hf" on layer L only. The
    norm runs on the model's device and dtype; the result keeps the features'. Post-norm encoders have no final
    norm: all three are the same."""
    check_feature_norm(mode)
    tensor_arg(features, "features", ndim=3, kind="float", what="(L', n, d) features")
    numbers = list(range(1, features.shape[0] + 1)) if layers is None else list(layers)
    if mode == "raw":
        return features
    with torch.no_grad():
        return torch.stack([
            adapter.norm(f.to(device=adapter.device, dtype=adapter.dtype)).to(device=f.device, dtype=f.dtype)
            if mode == "normed" or l == adapter.num_layers else f for f, l in zip(features, numbers)])


def _process_batch(adapter: LayerAdapter, inputs, labels, *, pooling, index, readout, reader, keep_logits, topk,
                   feature_norm, dtype, embeddings=False) -> dict:
    """One batch -> {field: tensor} with layered fields (L', b, ...) and 'labels' (b,)."""
    # without a readout only the selected layers are needed: stop after the deepest one
    hidden = adapter.hidden_states(inputs, upto=None if readout else max(index) + 1)
    pooled = adapter.pool(hidden, pooling)  # (L, b, d), raw block outputs
    out = {"features": normed_features(adapter, pooled[index], feature_norm, [i + 1 for i in index]).to(dtype)}
    if embeddings:  # layer 0, pooled as the features; the final norm only where every layer gets it ("normed")
        embedded = adapter.pool(replace(hidden, states=adapter.embedding_output(hidden, inputs)[None]), pooling)
        out["embedding"] = normed_features(adapter, embedded, feature_norm, [0]).to(dtype)
    targets = adapter.targets(hidden, labels, pooling)
    if targets is not None:
        out["labels"] = targets
    if not readout:
        return out
    # the selected layers, and layer L: the probability of the final prediction needs the model's own answer
    read = sorted({i + 1 for i in index} | {adapter.num_layers})
    keep = [read.index(i + 1) for i in index]
    vectors = adapter.head_inputs(hidden, pooling, layers=read)
    chunks = []
    for _, stats in read_stats(reader, vectors, read, final=True, targets=targets, topk=topk, keep=keep,
                               keep_logits=keep_logits):
        if keep_logits:
            stats["logits"] = stats["logits"].to(dtype)
        chunks.append(stats)
    out.update({k: torch.cat([c[k] for c in chunks], dim=1) for k in chunks[0]})
    return out


def extract(model, data, *, pooling: str | None = None, readout: bool | None = None, labels=None, layers=None,
            keep_logits: bool | None = None, topk: int | None = None, feature_norm: str = "raw",
            batch_size: int = 64, dtype: torch.dtype = torch.float32, cache_dir: str | Path | None = None,
            data_key: str | None = None, model_key: str | None = None, mmap: bool = False, verify: bool = True,
            progress: bool = True, reader=None, embeddings: bool = False) -> Extraction:
    """Per-layer features and readouts of `model` over `data`, cached on disk when `cache_dir` is given.

    model: a `LayerAdapter` (from `layersim.models.load_model` / `adapt`) or a model `adapt` accepts.
    data: a list of strings, a tensor of images (N, C, H, W), a Dataset of (x, y), or a loader yielding
        tensors, (inputs, labels) pairs or tokenised dicts. Read in order, `batch_size` at a time.
    pooling: "cls", "mean", "last" or "tokens" (see `layersim.models.base`); default the pooling the
        model's own head reads (``adapter.readout_pooling``: "cls" for ViT/DeiT/BERT, "tokens" for a causal LM).
    readout: apply the last-layer classifier to every layer (default: when the model has a head).
    labels: (n,) labels for a list of texts or a tensor of images (loaders yield their own).
    layers: 1-based layer numbers to keep (default all 1..L); the final prediction is always layer L's.
    keep_logits: store the full (L', n, C) logits (default: yes for classifiers, no for a vocabulary).
    topk: store the top-k ids and probabilities per layer (default: 5 for a vocabulary, none otherwise).
    feature_norm: "raw" (block outputs), "normed" (the model's final norm applied to every layer's features,
        e.g. SmolLM2's RMSNorm), or "hf" (layer L normed only, as Hugging Face's output_hidden_states and
        the authors' GPT-2 code); see `normed_features`.
    dtype: float32 (default), float16 or float64 for stored features and logits.
    cache_dir: folder of the cache; None computes without caching.
    data_key: a name for the data selection, used in the cache key instead of hashing the data.
    model_key: a name for the weights (e.g. a checkpoint's hash), instead of hashing the weights.
    mmap: return cached arrays memory-mapped (copy-on-write) instead of reading them into memory.
    verify: check the cached files' checksums when loading.
    reader: what reads every layer (default the model's own last-layer classifier, ``adapter.reader``; an
        `ExitHeads` for a multi-exit model's own heads, `layersim.models.readers`).
    embeddings: also keep the pooled embedding output, layer 0 (``Extraction.embedding``, (1, n, d)), recorded
        in the same forward where the adapter can (``adapter.embedding_output``).
    -> `Extraction` with features (L', n, d) and, with readout, preds/final_prob (L', n) and more.
    """
    adapter = adapt(model)
    pooling = adapter.readout_pooling if pooling is None else pooling
    adapter.check_pooling(pooling)
    index = layer_indices(layers, adapter.num_layers)
    check_batch_size(batch_size)
    if dtype not in _NUMPY_DTYPES:
        raise ValueError(f"dtype must be one of {list(_NUMPY_DTYPES)}, got {dtype}")
    check_feature_norm(feature_norm)
    is_vocab = adapter.vocabulary_readout
    if readout is None:
        readout = adapter.has_readout and pooling in adapter.readout_poolings
    if readout:
        adapter.check_readout_pooling(pooling)
        reader = as_reader(adapter, reader)
    reader_id = "shared head" if reader is None or reader is adapter.reader else {
        "reader": type(reader).__name__, "weights": weights_fingerprint(reader)}
    keep_logits = (not is_vocab) if keep_logits is None else keep_logits
    topk = (5 if is_vocab else None) if topk is None else whole_number(topk, "topk", low=1)
    settings = {"format": CACHE_FORMAT, "pooling": pooling, "layers": [i + 1 for i in index],
                "readout": bool(readout), "keep_logits": bool(keep_logits), "topk": topk,
                "feature_norm": feature_norm, "dtype": str(dtype), "batch_size": batch_size,
                "readout_formula": adapter.readout_formula() if readout else None, "reader": reader_id}
    if not isinstance(embeddings, bool):
        raise ArgumentTypeError(f"embeddings must be True or False, got {describe(embeddings)}")
    if embeddings:  # (absent otherwise: the keys of existing cache entries stay as they were)
        settings["embeddings"] = True

    def compute(folder: Path | None) -> dict:
        store = _Store(folder) if folder is not None else _MemoryStore()
        batches = iter_batches(data, batch_size, labels)
        total = _num_batches(data, batch_size)
        with torch.no_grad(), eval_mode(adapter.model):
            bar = _progress.progress(batches, total=total, desc=f"extract {adapter.name}", unit="batch",
                                     disable=not progress)
            for inputs, y in bar:
                out = _process_batch(adapter, inputs, y, pooling=pooling, index=index, readout=readout, reader=reader,
                                     keep_logits=keep_logits, topk=topk, feature_norm=feature_norm, dtype=dtype,
                                     embeddings=embeddings)
                for name, value in out.items():
                    store.add(name, value, layered=name != "labels")
        if not store.fields:
            raise ValueError("data is empty: no batch to extract")
        return store.finish()

    if cache_dir is None:
        return _result({"tensors": compute(None)}, settings, key="", path=None, from_cache=False)

    model_id = (stable_hash({"settings": adapter.settings(), "weights": model_key}) if model_key
                else adapter.fingerprint())
    spec = {**settings, "model": model_id, "data": data_key or data_fingerprint(data, batch_size, labels)}
    key = stable_hash(spec)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    clean_leftovers(cache_dir)  # temporary folders of killed writers, trash of replaced entries
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in adapter.name)[-40:]
    folder = cache_dir / f"{safe_name}-{pooling}-{key}"
    # one process computes an entry; another asking for it at the same time waits, then reads it

    def build(path: Path) -> Extraction:
        with atomic_folder(path) as tmp:
            fields = compute(tmp)
            _write_meta(tmp, key, {**settings, "model": spec["model"], "data": spec["data"]}, fields)
        return _result(_read_entry(path, key, mmap=mmap, verify=False), settings, key, path, False)

    return load_or_build(folder, lambda path: _result(_read_entry(path, key, mmap=mmap, verify=verify), settings,
                                                      key, path, True),
                         build, lock=cache_dir / ".locks" / key, damaged=(CorruptEntry,), what="cache entry")


def _write_meta(folder: Path, key: str, settings: dict, fields: dict) -> None:
    atomic_write_json(folder / "meta.json", {"format": CACHE_FORMAT, "key": key, "settings": settings, "fields": fields})


def _result(entry: dict, settings: dict, key: str, path: Path | None, from_cache: bool) -> Extraction:
    tensors = entry["tensors"]
    return Extraction(layers=list(settings["layers"]), key=key, path=path, from_cache=from_cache,
                      settings=settings, **{name: tensors.get(name) for name in FIELDS})


def extract_features(model, data, *, pooling: str | None = None, batch_size: int = 64, progress: bool = True,
                     layers=None, feature_norm: str = "raw", cache_dir: str | Path | None = None,
                     data_key: str | None = None) -> torch.Tensor:
    """Features of blocks 1..L (or `layers`) for every item of `data` -> (L, n, d) float32 tensor.

    The features half of `extract` (no readout), with the same arguments and defaults: data is a list of
    texts, a tensor of images or a loader; pooling "cls", "mean", "last" or "tokens" (default the model's
    readout pooling: pass pooling="mean" for a sentence-transformer such as MiniLM). With `cache_dir`, the
    features are cached on disk.
    """
    out = extract(model, data, pooling=pooling, readout=False, layers=layers, feature_norm=feature_norm,
                  batch_size=batch_size, cache_dir=cache_dir, data_key=data_key, progress=progress)
    return out.features.float()
