"""What the report reads: the model (a name, a folder, a model object or an adapter) and the data (an offline
source by name, a text file, a folder of images, or texts / tensors from Python), checked against each other.

Every problem with either is a `ReportError` whose message is one line saying what to do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import data as D
from ..models import LayerAdapter, SelfCheckError, adapt, load_model
from ..lm import lm_sequences, token_batches

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TEXT_SOURCES = {"reviews": "Rotten Tomatoes review snippets (test split, labels fresh/rotten)",
                "english": "the offline English corpus, test split (documents packed into sequences for an LM)"}
IMAGE_SOURCES = {"digits": "scikit-learn's 8x8 digits (test split)", "fashion-mnist": "Fashion-MNIST (test split)"}
SOURCES = {**TEXT_SOURCES, **IMAGE_SOURCES}
ALIASES = {"rotten-tomatoes": "reviews", "english-corpus": "english", "fashion_mnist": "fashion-mnist"}


class ReportError(ValueError):
    """Bad input to the report (model, data, or the two together): the message is one line saying what to do."""


def one_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (the library's messages put the cause first)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0] if lines else type(error).__name__


# ---- the model ------------------------------------------------------------------------------------------
def resolve_model(model, *, device: str | torch.device = "cpu") -> LayerAdapter:
    """An adapter (self-checked when made) for a layersim model name, a local folder or file, a model object
    (our ViT, timm, Hugging Face; a tokenizer can be given as ``(model, tokenizer)``) or an adapter."""
    try:
        if isinstance(model, LayerAdapter):
            model.self_check()  # an adapter made with check=False is checked now: no unchecked numbers
            return model
        if isinstance(model, (str, Path)):
            return load_model(model, device=device)
        if isinstance(model, tuple) and len(model) == 2 and isinstance(model[0], nn.Module):
            return adapt(model[0].to(device).eval(), model[1])
        if isinstance(model, nn.Module):
            return adapt(model.to(device).eval(), getattr(model, "tokenizer", None))
    except SelfCheckError as e:
        raise ReportError(f"the model fails layersim's self-check, so no numbers are reported: {one_line(e)}") from e
    except (OSError, ValueError, ImportError, KeyError, RuntimeError) as e:
        raise ReportError(f"cannot load model {str(model)!r:.200}: {one_line(e)}") from e
    raise ReportError(f"expected a model name, a folder, a model object or a LayerAdapter, got {type(model).__name__}")


def modality(adapter: LayerAdapter) -> str:
    """'lm' (causal language model), 'text' (text encoder), 'audio' (audio encoder), 'image' or 'tensor' (a
    user's adapter: any tensor it reads, given from Python)."""
    return "lm" if adapter.vocabulary_readout else adapter.modality


# ---- the data -------------------------------------------------------------------------------------------
@dataclass
class Inputs:
    """The data as batches the adapter reads: ``batches`` a list of (inputs, labels or None) with inputs a list
    of texts, an (b, C, H, W) image tensor or ``{"input_ids": (b, T)}``; ``num_inputs`` inputs in all."""

    batches: list
    num_inputs: int
    source: str
    labels: bool = False
    classes: list = field(default_factory=list)
    truncated: int = 0
    notes: list = field(default_factory=list)


def resolve_data(adapter: LayerAdapter, data=None, *, n: int | None = None, seq_len: int = 128,
                 batch_size: int | None = None) -> Inputs:
    """`data` for `adapter`: None (the default source of its modality), a source name (`SOURCES`), a text
    file, a folder of images, a list of texts, an (N, C, H, W) image tensor, an (N, T) tensor of token ids,
    or a pair (inputs, labels). The first `n` inputs are kept."""
    kind = modality(adapter)
    labels = None
    if isinstance(data, tuple) and len(data) == 2:
        data, labels = data
    if kind == "audio":
        return _audio_inputs(adapter, data, labels, n, batch_size or 8)
    if kind == "tensor":
        return _tensor_inputs(adapter, data, labels, n, batch_size or 32)
    if data is None:
        data = {"lm": "english", "text": "reviews"}.get(kind) or _default_images(adapter)
    if isinstance(data, (str, Path)):
        data, labels, source, classes = _named_source(data, kind)
    else:
        source, classes = f"given {type(data).__name__}", []
    packed = kind == "lm" and source == SOURCES["english"] or (kind == "lm" and source.startswith("text file"))
    if n is not None and not packed:
        data = data[:n]
        labels = None if labels is None else labels[:n]
    if len(data) == 0:
        raise ReportError(f"the data set ({source}) is empty: nothing to analyse")
    size = batch_size or (8 if kind == "lm" else 32)
    if kind == "image":
        return _image_inputs(adapter, data, labels, source, classes, size)
    if isinstance(data, torch.Tensor) and not (data.dim() == 2 and not data.is_floating_point()):
        raise ReportError(f"{adapter.name} reads text, but the data are a tensor of shape {tuple(data.shape)} "
                          f"({'images' if data.dim() == 4 else data.dtype}); give texts or (N, T) token ids")
    if isinstance(data, torch.Tensor):  # token ids
        notes = []
        use = _labels_fit(adapter, labels, classes, notes)
        batches = [({**b, "labels": use[i * size:(i + 1) * size]} if use is not None else b, None)
                   for i, b in enumerate(token_batches(data.long(), size))]
        return Inputs(batches, len(data), source, use is not None, classes, notes=notes)
    if not all(isinstance(t, str) for t in data):
        bad = next(type(t).__name__ for t in data if not isinstance(t, str))
        raise ReportError(f"{adapter.name} reads text, but the data hold {bad} items, not strings")
    return _text_inputs(adapter, list(data), labels, source, classes, size, packed=packed,
                        n=n, seq_len=seq_len)


def _pairs(batches: list) -> list:
    return [(b, None) for b in batches]


def _named_source(name, kind: str):
    """(data, labels, description, classes) of a source name, a text file or an image folder."""
    key = ALIASES.get(str(name), str(name))
    path = Path(name)
    if key in SOURCES and not path.exists():
        if (key in TEXT_SOURCES) != (kind != "image"):
            want = "text" if kind != "image" else "images"
            raise ReportError(f"data source {key!r} holds {'text' if key in TEXT_SOURCES else 'images'}, but the "
                              f"model reads {want}; use one of {', '.join(TEXT_SOURCES if want == 'text' else IMAGE_SOURCES)}")
        try:
            if key == "reviews":
                d = D.load_rotten_tomatoes()
                return d.test_texts, d.test_labels, SOURCES[key], d.classes
            if key == "english":
                return D.load_english_corpus().test, None, SOURCES[key], []
            d = D.load_digits() if key == "digits" else D.load_fashion_mnist()
            x, y = zip(*[d.test[i] for i in range(len(d.test))])
            return torch.stack(x), torch.tensor(y), SOURCES[key], list(d.classes)
        except FileNotFoundError as e:
            raise ReportError(f"data source {key!r} is not on this machine: {one_line(e)} "
                              "(`python -m layersim.data install` installs the offline sources)") from e
    if path.is_file():
        if kind == "image":
            raise ReportError(f"{path} is a text file, but the model reads images; give a folder of images")
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        return lines, None, f"text file {path}", []
    if path.is_dir():
        if kind != "image":
            raise ReportError(f"{path} is a folder, but the model reads text; give a text file (one text a line)")
        x, y, classes = _image_folder(path)
        return x, y, f"image folder {path}", classes
    raise ReportError(f"unknown data {str(name)!r}: not a source ({', '.join(SOURCES)}), nor an existing file or "
                      "folder")


def _image_folder(path: Path):
    """Images of a folder (flat, or one sub-folder per class) -> ((N, 3, H, W) in [0, 1], labels or None, classes)."""
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    subdirs = sorted(p for p in path.iterdir() if p.is_dir())
    files = [(f, i) for i, d in enumerate(subdirs) for f in sorted(d.iterdir())] if subdirs else \
        [(f, None) for f in sorted(path.iterdir())]
    files = [(f, i) for f, i in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ReportError(f"the image folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for f, _ in files:
        with Image.open(f) as im:
            images.append(to_tensor(im.convert("RGB").resize((224, 224))))
    labels = torch.tensor([i for _, i in files]) if subdirs else None
    return torch.stack(images), labels, [d.name for d in subdirs]


def _expected_shape(adapter) -> tuple:
    """The shape of one input the adapter reads (images (C, H, W), log-mel features (mel, frames)): its
    ``input_shape`` where it has one (None: any size, e.g. a waveform's samples), else its probe batch's."""
    shape = getattr(adapter, "input_shape", None)
    return tuple(shape) if shape is not None else tuple(adapter.probe_batch().shape[1:])


def _default_images(adapter) -> str:
    c, h, w = _expected_shape(adapter)
    return "digits" if (h, w) == (8, 8) else "fashion-mnist"


def _image_inputs(adapter, data, labels, source, classes, size) -> Inputs:
    if not isinstance(data, torch.Tensor) or data.dim() != 4:
        what = "texts" if isinstance(data, (list, tuple)) and data and isinstance(data[0], str) else \
            (f"a tensor of shape {tuple(data.shape)}" if isinstance(data, torch.Tensor) else type(data).__name__)
        raise ReportError(f"{adapter.name} reads images (N, C, H, W), but the data are {what}")
    data = data.float()
    notes = []
    c, h, w = _expected_shape(adapter)
    if tuple(data.shape[1:]) != (c, h, w):
        notes.append(f"images of shape {tuple(data.shape[1:])} were resized to the model's ({c}, {h}, {w})"
                     + (" and their channels repeated" if data.shape[1] == 1 and c != 1 else ""))
        if data.shape[1] not in (1, c):
            raise ReportError(f"{adapter.name} reads images with {c} channels, the data have {data.shape[1]}")
        data = F.interpolate(data, size=(h, w), mode="bilinear", align_corners=False).expand(-1, c, -1, -1)
    use = _labels_fit(adapter, labels, classes, notes)
    batches = [(data[i:i + size], use[i:i + size] if use is not None else None) for i in range(0, len(data), size)]
    return Inputs(batches, len(data), source, use is not None, classes, notes=notes)


def _audio_inputs(adapter, data, labels, n, size) -> Inputs:
    """An audio model's inputs from Python (there is no offline audio source): a float tensor of what the adapter
    reads (Whisper: (N, mel bins, frames) log-mel features; wav2vec 2.0: (N, samples) waveforms), with labels for
    an audio classifier."""
    return _tensor_inputs(adapter, data, labels, n, size, floats=True, what=f"{adapter.input_name} ",
                          no_source="audio and there is no offline audio source", want=adapter.inputs_wanted())


def _tensor_inputs(adapter, data, labels, n, size, *, floats: bool = False, what: str = "", want: str | None = None,
                   no_source: str = "tensors and layersim has no source of them") -> Inputs:
    """Inputs given from Python as one tensor (N, ...) shaped as the adapter's probe batch, with optional labels:
    a user's adapter, or an audio encoder (`floats`: the tensor must be floating point)."""
    shape = _expected_shape(adapter)
    want = want or f"an (N, {', '.join(map(str, shape))}) tensor, as {type(adapter).__name__}.probe_batch() (and labels)"
    if not isinstance(data, torch.Tensor):
        got = "no data" if data is None else repr(str(data)) if isinstance(data, (str, Path)) else type(data).__name__
        raise ReportError(f"{adapter.name} reads {no_source}: give {want} (got {got})")
    fits = data.dim() == 1 + len(shape) and all(e is None or g == e for g, e in zip(data.shape[1:], shape))
    if not fits or (floats and not data.is_floating_point()):
        raise ReportError(f"{adapter.name} reads {want}; the data are a {data.dtype} tensor of shape "
                          f"{tuple(data.shape)}")
    data = data[:n] if n is not None else data
    labels = None if labels is None else torch.as_tensor(labels)[:len(data)]
    if len(data) == 0:
        raise ReportError("the data set (given Tensor) is empty: nothing to analyse")
    if labels is not None and len(labels) != len(data):
        raise ReportError(f"{len(labels)} labels for {len(data)} inputs: give one label per input")
    notes: list = []
    use = _labels_fit(adapter, labels, [], notes)
    batches = [(data[i:i + size], None if use is None else use[i:i + size]) for i in range(0, len(data), size)]
    return Inputs(batches, len(data), f"given Tensor of {what}{tuple(data.shape)}", use is not None, [], notes=notes)


def _labels_fit(adapter, labels, classes, notes):
    """The labels when the model's head has as many classes as the data, else None (and a note why)."""
    if labels is None or not adapter.has_readout:
        return None
    labels = torch.as_tensor(labels).long()
    count = len(classes) or int(labels.max()) + 1
    if count != adapter.num_classes:
        notes.append(f"the data's {count} labels are not used: the model's head has {adapter.num_classes} classes, "
                     "so accuracy against them would mean nothing (agreement with the final prediction is shown)")
        return None
    return labels


def _text_inputs(adapter, texts, labels, source, classes, size, *, packed, n, seq_len) -> Inputs:
    tok = adapter.tokenizer
    if tok is None:
        raise ReportError(f"{adapter.name} has no tokenizer, so it cannot read texts; give token ids")
    notes = []
    if adapter.vocabulary_readout and packed:
        length = min(seq_len, adapter.max_length, adapter.max_positions)
        try:
            seqs = lm_sequences(tok, texts, length, max_sequences=n)
        except ValueError as e:
            raise ReportError(f"cannot make sequences of {length} tokens from {source}: {one_line(e)}") from e
        notes.append(f"documents joined and cut into {len(seqs)} sequences of {length} tokens")
        return Inputs(_pairs(token_batches(seqs, size)), len(seqs), source, notes=notes)
    limit = min(adapter.max_length, adapter.max_positions)
    lengths = [len(ids) for ids in tok(texts, truncation=False)["input_ids"]]
    truncated = sum(length > limit for length in lengths)
    if truncated:
        notes.append(f"{truncated} of {len(texts)} texts are longer than {limit} tokens and were truncated")
    use = _labels_fit(adapter, labels, classes, notes)
    batches = [(texts[i:i + size], use[i:i + size] if use is not None else None) for i in range(0, len(texts), size)]
    return Inputs(batches, len(texts), source, use is not None, classes, truncated, notes)
