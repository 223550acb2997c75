"""Per-layer features over a data set (minimal first version; the models issue completes it)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm


def extract_features(adapter, data, *, pooling: str = "mean", batch_size: int = 64,
                     progress: bool = True) -> torch.Tensor:
    """Features of every block for every item of `data` (a list of texts) -> (L, n, d) float32."""
    data = list(data)
    chunks = []
    for i in tqdm(range(0, len(data), batch_size), desc="extract", disable=not progress):
        chunks.append(adapter.layers(data[i:i + batch_size], pooling=pooling).float())
    return torch.cat(chunks, dim=1)
