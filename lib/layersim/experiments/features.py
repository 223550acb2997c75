"""Per-layer features of the notebooks' models over the samples the notebooks use for each kind of model
(`load_layer_features` -> `LayerFeatures`): review snippets for a text encoder, every token of a few English
documents for a causal LM, test images for a model trained from a recipe (``"train:<recipe>"``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..device import resolve_device
from ..extract import FEATURE_NORMS, normed_features
from ._checks import _count

__all__ = ["LayerFeatures", "load_layer_features", "FEATURE_NORMS", "TRAINED_PREFIX"]

TRAINED_PREFIX = "train:"


@dataclass
class LayerFeatures:
    """Per-layer features of one model over one set of samples (see `load_layer_features`).

    name: the model as named; modality: what the model reads, as `TrainResult.modality`: "text" (a text
    encoder; one vector per text), "lm" (a causal LM; one vector per token, the first token of each text
    included) or "image"; features: (L, n, d) float32, the pooled raw
    block outputs of blocks 1..L (a causal LM: before the final norm); labels: (n,) class labels, or the
    next token of each token for a causal LM, or None; pooling: how tokens became samples; samples: what
    the samples are, in words; adapter: the model's adapter (`layersim.models`).
    """

    name: str
    modality: str
    features: torch.Tensor
    labels: torch.Tensor | None
    pooling: str
    samples: str
    adapter: object

    @property
    def num_layers(self) -> int:
        return self.features.shape[0]

    def with_norm(self, mode: str = "normed") -> torch.Tensor:
        """(L, n, d) features under a convention for the model's final norm: "raw" (the block outputs),
        "normed" (the final norm applied to every layer, as the model itself reads layer L) or "hf" (only
        layer L normed, as Hugging Face's hidden states and the authors' GPT-2 code). Post-norm encoders
        (BERT family) have no final norm: all three are the same."""
        return normed_features(self.adapter, self.features, mode)


def _trained(spec: str, device, recipe_overrides: dict | None):
    from ..train import train_cached

    parts = spec[len(TRAINED_PREFIX):].split(":")
    if len(parts) > 2 or not parts[0] or not all(parts):
        raise ValueError(f"a trained model is named 'train:<recipe>' or 'train:<recipe>:<objective>' (e.g. "
                         f"'train:vit-fashion-mnist:aligned'); got {spec!r}")
    recipe, objective = parts[0], (parts[1] if len(parts) == 2 else "standard")
    if recipe_overrides is not None and not isinstance(recipe_overrides, dict):
        raise TypeError(f"recipe_overrides must map recipe names to dicts of config keys, e.g. "
                        f"{{'vit-fashion-mnist': {{'epochs': 1}}}}; got {type(recipe_overrides).__name__}")
    overrides = (recipe_overrides or {}).get(recipe, {})
    if not isinstance(overrides, dict):
        raise TypeError(f"recipe_overrides[{recipe!r}] must be a dict of config keys; got {overrides!r}")
    return train_cached(recipe, objective=objective, device=str(device), **overrides)


def load_layer_features(model: str, *, n_texts: int = 1000, n_documents: int = 16, n_images: int = 1000,
                        pooling: str | None = None, batch_size: int = 64, seed: int = 0,
                        device: str | torch.device = "auto", cache_dir=None,
                        recipe_overrides: dict | None = None) -> LayerFeatures:
    """Per-layer features of `model` over the samples the notebooks use for its kind -> `LayerFeatures`.

    model:
      - a text encoder (``"minilm-l6"``, ``"bert-base-uncased"``, ...): `n_texts` Rotten Tomatoes review
        snippets (`layersim.data.load_rotten_tomatoes`, seeded), one vector per snippet (`pooling`, default
        the model's readout pooling: pass "mean" for MiniLM, a sentence-transformer);
      - a causal LM (``"smollm2-135m"``, ``"gpt2"``): every token of the first `n_documents` documents of the
        test split of the offline English corpus (`layersim.data.load_english_corpus`), truncated to the
        adapter's max_length; the raw residual states (see `LayerFeatures.with_norm` for the final norm);
      - ``"train:<recipe>"`` or ``"train:<recipe>:<objective>"``: the model `layersim.train.train_cached`
        trains from that recipe with that objective (default standard; trained once, then cached), read on
        the first `n_images` images of its test split, CLS token by default; `recipe_overrides` maps recipe
        names to changes of their config (e.g. ``{"vit-fashion-mnist": {"epochs": 1}}``), as the notebooks'
        parameter of that name does.
    Features are extracted with `layersim.extract.extract` (cached in `cache_dir` when given) on `device`
    ("auto": CUDA when available).
    """
    from .. import data, extract
    from ..models import load_model

    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a model name such as 'minilm-l6', 'smollm2-135m' or "
                         f"'train:vit-fashion-mnist'; got {model!r}")
    for name, value in (("n_texts", n_texts), ("n_documents", n_documents), ("n_images", n_images)):
        _count(value, name)
    device = resolve_device(device)
    if model.startswith(TRAINED_PREFIX):
        run = _trained(model, device, recipe_overrides)
        if run.modality != "image":
            raise ValueError(f"{model}: trained on {run.config.data} ({run.modality}); only image models are read this way. "
                             "A text model: name the saved run folder instead")
        test = run.test_split()
        n = min(n_images, len(test))
        images, labels = test.take(range(n))
        adapter = run.adapter
        adapter.model.to(device).eval()
        pooling = pooling or adapter.readout_pooling
        out = extract.extract(adapter, run.prepare(images), pooling=pooling, readout=False, batch_size=batch_size,
                              cache_dir=cache_dir)
        return LayerFeatures(model, "image", out.features.float(), labels, pooling,
                             f"{n} test images of {run.config.data}", adapter)
    adapter = load_model(model, device=device)
    if adapter.vocabulary_readout:  # a causal LM: every token is a sample
        docs = data.load_english_corpus(seed=seed).test[:n_documents]
        out = extract.extract(adapter, docs, pooling="tokens", readout=False, feature_norm="raw",
                              batch_size=batch_size, cache_dir=cache_dir)
        return LayerFeatures(model, "lm", out.features.float(), out.labels, "tokens",
                             f"{out.features.shape[1]} tokens of {len(docs)} English documents", adapter)
    if not hasattr(adapter, "encode"):
        raise ValueError(f"{model} is a vision model: name it as a training run, 'train:<recipe>', so that it is "
                         "read on the images of its own task")
    reviews = data.load_rotten_tomatoes(n=n_texts, seed=seed)
    texts = reviews.train_texts + reviews.test_texts
    labels = torch.cat([reviews.train_labels, reviews.test_labels])
    pooling = pooling or adapter.readout_pooling
    out = extract.extract(adapter, texts, pooling=pooling, readout=False, batch_size=batch_size, cache_dir=cache_dir)
    return LayerFeatures(model, "text", out.features.float(), labels, pooling,
                         f"{len(texts)} review snippets (Rotten Tomatoes)", adapter)
