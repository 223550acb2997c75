"""`report(model, data)`: the paper's analysis of any model, as a `Report` (numbers, figures, a page)."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..device import resolve_device
from ..storage import atomic_folder
from .analysis import analyse
from .inputs import ReportError, modality, one_line, resolve_data, resolve_model
from .page import figures, render_html


@dataclass
class Report:
    """A report. ``numbers``: every number (``cos``/``cka`` (L, L) nested lists, (L+1, L+1) from layer 0 with
    embeddings (``first_layer``); ``cos_to_last``/``cka_to_last`` over the same layers; per-layer lists of L
    entries: ``accuracy``, ``agreement_with_final``, ``final_prob``, ``perplexity``, ``saturation_histogram``;
    ``minimal_depth``, ``flops``, ``examples``); ``info``: the model, data, structure, notes and time;
    ``figures``: {name: (base64 PNG, title, how to read it)}."""

    numbers: dict
    info: dict
    figures: dict

    def to_json(self) -> dict:
        return {"info": self.info, **self.numbers}

    def html(self, *, full_page: bool = True) -> str:
        return render_html(self.info, self.numbers, self.figures, full_page=full_page)

    def _repr_html_(self) -> str:  # shown inline in Jupyter
        return self.html(full_page=False)

    def save(self, out) -> Path:
        """Write ``report.json`` and ``report.html`` into the folder `out`, atomically: the folder is built
        beside it and renamed into place (an existing `out` is replaced only once everything is written)."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ReportError(f"--out {out} exists and is not a folder")
        with atomic_folder(out, replace=True) as tmp:
            (tmp / "report.json").write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")
            (tmp / "report.html").write_text(self.html(), encoding="utf-8")
        return out


def _no_readout_reason(adapter, pooling: str) -> str:
    if not adapter.has_readout:
        return adapter.no_readout_reason()
    return f"the head of {adapter.name} does not read samples of pooling {pooling!r}"


def report(model, inputs=None, *, n: int | None = None, out=None, device: str = "cpu", pooling: str | None = None,
           feature_norm: str = "normed", seq_len: int = 128, batch_size: int | None = None,
           progress: bool = True, embeddings: bool = False) -> Report:
    """The paper's analysis of `model` on `inputs`, in one call.

    model: a layersim model name ("minilm-l6", "smollm2-135m"), a local Hugging Face / timm folder (whatever
        `layersim.models.load_model` accepts), a model object (our ViT, timm, Hugging Face text, vision, audio
        classifiers and encoder-decoder models (their encoder stack); ``(model, tokenizer)`` for a text model) or
        an adapter.
    inputs: None (text encoders: review snippets; causal LMs: the English corpus test split packed into
        sequences of `seq_len` tokens; images: digits or Fashion-MNIST), a source name ("reviews", "english",
        "digits", "fashion-mnist"), a text file, a folder of images, a list of texts, an (N, C, H, W) image tensor,
        (N, T) token ids, an (N, mel bins, frames) tensor of log-mel features (Whisper's encoder or audio
        classifier), an (N, samples) tensor of waveforms (wav2vec 2.0 / HuBERT classifiers), or a pair (inputs,
        labels).
    n: the first n inputs (texts, images or sequences); default 1000 (LM: 64 sequences).
    out: a folder to write report.json and report.html into (atomically).
    pooling / feature_norm: the samples compared and the final norm on the features (`layersim.extract`).
    embeddings: add the embedding output (the input of block 1) as layer 0 to the similarity figures and
        numbers (``cos``/``cka`` (L+1, L+1), ``cos_to_last``/``cka_to_last``; ``first_layer`` 0); the
        readout stays layers 1..L.
    -> `Report`; bad input raises `ReportError` (one line).
    """
    start = time.perf_counter()
    if not isinstance(embeddings, bool):
        raise ReportError(f"embeddings must be True or False, got {embeddings!r}")
    try:
        device = resolve_device(device)
    except (TypeError, ValueError) as e:
        raise ReportError(one_line(e)) from e
    adapter = resolve_model(model, device=device)
    n = n if n is not None else (64 if adapter.vocabulary_readout else 1000)
    data = resolve_data(adapter, inputs, n=n, seq_len=seq_len, batch_size=batch_size)
    try:
        numbers = analyse(adapter, data, pooling=pooling, feature_norm=feature_norm, show_progress=progress,
                          embeddings=embeddings)
    except (ValueError, RuntimeError, NotImplementedError) as e:
        if isinstance(e, ReportError):
            raise
        raise ReportError(f"{adapter.name} could not be read on this data: {one_line(e)}") from e
    info = {"model": adapter.name, "describe": adapter.describe(), "modality": modality(adapter),
            "structure": {k: str(v) for k, v in adapter.structure().items()}, "data": data.source,
            "inputs": data.num_inputs, "labels_used": data.labels, "truncated": data.truncated,
            "notes": data.notes, "device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    if not numbers["readout"]:
        info["no_readout"] = _no_readout_reason(adapter, numbers["pooling"])
    info["seconds"] = round(time.perf_counter() - start, 3)
    result = Report(numbers, info, figures(numbers))
    if out is not None:
        result.save(out)
    return result
