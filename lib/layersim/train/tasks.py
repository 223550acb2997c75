"""Data and model of a training run, behind one small interface the loop uses without knowing the family.

`build_task(cfg)` loads the data (`layersim.data`) and the model (`layersim.models`), checks that they
fit (class count, image channels), and returns a `Task`:

- ``task.adapter``: the model's adapter (hidden_states / head_inputs / targets / reader);
- ``task.train_batch(indices, rank_rows, step_seed)``: the model input and labels of this rank's rows of
  a global batch, augmented with randomness drawn for the *whole* global batch from `step_seed` (so the
  samples get the same augmentation whatever the number of ranks, and on a resumed run);
- ``task.eval_batch(indices)``: the same without augmentation;
- ``task.info``: what is needed to rebuild the model and its input pipeline (saved with the weights).

Images are kept as float tensors in [0, 1] and prepared per batch: augmentation (random crop with
padding, horizontal flip, RandAugment), resizing to the model's input size, grey -> RGB when the model
wants 3 channels, normalisation. Texts are lists of strings, tokenised by the adapter.

Language modelling (data english-corpus | wikitext103 | text-file): the documents of each split are
tokenised (the model's own tokenizer, or a byte-level BPE trained on the training split), joined by the
end-of-text token and packed into sequences of `seq_len` tokens (cached under
``default_cache_dir()/tokens``); a sample is a sequence, its targets its next tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from .. import data as D
from ..storage import atomic_save, default_cache_dir, load_or_build, stable_hash
from .config import LM_SOURCES, ConfigError, TrainConfig


# ---- splits ----------------------------------------------------------------------------------------------
@dataclass
class Split:
    """One split: `inputs` a float tensor (N, C, H, W) in [0, 1], an indexable Dataset of (image, label),
    or a list of N strings; `labels` (N,) long."""

    inputs: Any
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices) -> tuple:
        idx = np.asarray(indices, dtype=np.int64)
        labels = self.labels[torch.from_numpy(idx)]
        if isinstance(self.inputs, torch.Tensor):
            return self.inputs[torch.from_numpy(idx)], labels
        if isinstance(self.inputs, list):
            return [self.inputs[i] for i in idx], labels
        return torch.stack([self.inputs[int(i)][0] for i in idx]), labels


def _image_split(dataset: Dataset) -> Split:
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors
        return Split(x, y.long())
    if hasattr(dataset, "targets"):  # ImageFolder: labels without decoding any image
        labels = torch.as_tensor(dataset.targets).long()
    elif isinstance(dataset, torch.utils.data.Subset) and hasattr(dataset.dataset, "targets"):
        labels = torch.as_tensor(dataset.dataset.targets).long()[torch.as_tensor(dataset.indices)]
    else:
        labels = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    return Split(dataset, labels)


def _subset(split: Split, n: int, seed: int, what: str) -> Split:
    if n == 0 or n == len(split):
        return split
    if n > len(split):
        raise ConfigError(f"{what}={n} but the split has only {len(split)} samples")
    idx = np.sort(np.random.default_rng(seed).permutation(len(split))[:n])
    if isinstance(split.inputs, (torch.Tensor, list)):
        return Split(*split.take(idx))
    return Split(torch.utils.data.Subset(split.inputs, idx.tolist()), split.labels[torch.from_numpy(idx)])


def load_splits(cfg: TrainConfig) -> tuple:
    """(train Split, test Split, classes, kind) for cfg.data; kind is "image" or "text"."""
    root = cfg.data_root or None
    n_train, n_test, seed = cfg.n_train or None, cfg.n_test or None, cfg.data_seed
    if cfg.data == "fashion-mnist":
        d = D.load_fashion_mnist(root, n_train=n_train, n_test=n_test, seed=seed)
    elif cfg.data == "digits":
        d = D.load_digits(seed=seed)
    elif cfg.data in ("cifar10", "cifar100"):
        d = D.load_cifar(root, name=cfg.data, n_train=n_train, n_test=n_test, seed=seed)
    elif cfg.data == "image-folder":
        if root is None:
            raise ConfigError("data=image-folder needs data_root: the folder holding train/ and val/")
        size = cfg.image_size or 224
        d = D.load_image_folder(root, image_size=size, n_train=n_train, n_test=n_test, seed=seed)
    elif cfg.data == "rotten-tomatoes":
        d = D.load_rotten_tomatoes(seed=seed)
    elif cfg.data.startswith("glue/"):
        d = D.load_glue(cfg.data.split("/", 1)[1], local_dir=root)
    else:
        raise ConfigError(f"data={cfg.data} is text for language modelling, not a classification task")
    if isinstance(d, D.TextData):
        if d.train_labels is None:
            raise ConfigError(f"{cfg.data} has no labels: it cannot train a classifier")
        train, test, kind = Split(list(d.train_texts), d.train_labels.long()), \
            Split(list(d.test_texts), d.test_labels.long()), "text"
    else:
        train, test, kind = _image_split(d.train), _image_split(d.test), "image"
    train = _subset(train, cfg.n_train, seed, "n_train")
    test = _subset(test, cfg.n_test, seed + 1, "n_test")
    for name, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise ConfigError(f"the {name} split of {cfg.data} is empty")
    return train, test, list(d.classes), kind


# ---- image preparation -----------------------------------------------------------------------------------
def _channel_stats(split: Split, limit: int = 5000) -> tuple:
    """Per-channel mean and std of the training images (the first `limit` of a lazy dataset)."""
    if isinstance(split.inputs, torch.Tensor):
        x = split.inputs
    else:
        x = split.take(np.arange(min(limit, len(split))))[0]
    x = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    return tuple(x.mean(1).tolist()), tuple(x.std(1).clamp_min(1e-6).tolist())


def random_crop(x: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """(n, C, H, W) images padded with zeros by `padding` pixels, cropped back to H x W at the per-sample
    (n, 2) offsets (dy, dx) in [0, 2 * padding]."""
    n, C, H, W = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = (offsets[:, 0:1] + torch.arange(H))[:, None, :, None]
    cols = (offsets[:, 1:2] + torch.arange(W))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols]


@dataclass
class ImagePipeline:
    """Batch preparation of images in [0, 1]: augmentation, resize, channels, normalisation."""

    in_chans: int
    image_size: int
    mean: tuple
    std: tuple
    augment: tuple = ()
    crop_padding: int = 0

    def draw(self, n: int, rng: np.random.Generator) -> dict:
        """Augmentation randomness for n samples (drawn for a whole global batch)."""
        out = {}
        if "crop" in self.augment:
            out["offsets"] = torch.from_numpy(rng.integers(0, 2 * self.crop_padding + 1, size=(n, 2)))
        if "flip" in self.augment:
            out["flip"] = torch.from_numpy(rng.random(n) < 0.5)
        if "randaugment" in self.augment:
            out["seeds"] = rng.integers(0, 2 ** 62, size=n).tolist()
        return out

    def __call__(self, x: torch.Tensor, draws: Optional[dict] = None) -> torch.Tensor:
        if draws:
            if "seeds" in draws:
                from torchvision.transforms import v2

                augment = v2.RandAugment()
                images = []
                for image, seed in zip(x, draws["seeds"]):
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        images.append(augment(image))
                x = torch.stack(images)
            if "offsets" in draws:
                x = random_crop(x, draws["offsets"], self.crop_padding)
            if "flip" in draws:
                x = torch.where(draws["flip"][:, None, None, None], x.flip(-1), x)
        if x.shape[1] != self.in_chans:
            if x.shape[1] == 1:
                x = x.expand(-1, self.in_chans, -1, -1)
            else:
                raise ValueError(f"the images have {x.shape[1]} channels, the model takes {self.in_chans}")
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.image_size)
        mean = torch.tensor(self.mean, dtype=x.dtype)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype)[:, None, None]
        if mean.shape[0] != x.shape[1]:
            mean, std = mean.mean().expand(x.shape[1], 1, 1), std.mean().expand(x.shape[1], 1, 1)
        return (x - mean) / std


# ---- the task ----------------------------------------------------------------------------------------------
@dataclass
class Task:
    adapter: Any
    train: Split
    test: Split
    classes: list
    kind: str
    info: dict = field(default_factory=dict)
    pipeline: Optional[ImagePipeline] = None
    tokenizer: Any = None  # language models: the run's own tokenizer, saved with the weights (None: the model's)
    input_key: Optional[str] = None  # token-id inputs are given to the adapter as {input_key: ids}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _prepare(self, inputs, draws=None):
        if self.input_key is not None:
            return {self.input_key: inputs}
        return self.pipeline(inputs, draws) if self.pipeline is not None else inputs

    def train_batch(self, indices: np.ndarray, rows: slice, step_seed) -> tuple:
        """Model input and labels of rows `rows` of the global batch `indices`, augmented with randomness
        drawn for the whole global batch from `step_seed` (a sequence of ints)."""
        draws = None
        if self.pipeline is not None and self.pipeline.augment:
            full = self.pipeline.draw(len(indices), np.random.default_rng(list(step_seed)))
            draws = {k: v[rows] for k, v in full.items()}
        inputs, labels = self.train.take(indices[rows])
        return self._prepare(inputs, draws), labels

    def eval_batch(self, indices: np.ndarray) -> tuple:
        inputs, labels = self.test.take(indices)
        return self._prepare(inputs), labels


def _image_input(model) -> tuple:
    """(channels, size, mean, std) a vision model expects; mean/std None when the model does not say."""
    config = getattr(model, "config", None)
    if hasattr(config, "image_size") and hasattr(config, "in_chans"):  # layersim ViT
        return config.in_chans, config.image_size, None, None
    embed = getattr(model, "patch_embed", None)
    if embed is not None and hasattr(embed, "proj"):  # timm
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        size = embed.img_size[0] if getattr(embed, "img_size", None) else cfg.get("input_size", (3, 224, 224))[1]
        return embed.proj.in_channels, size, cfg.get("mean"), cfg.get("std")
    raise ValueError(f"don't know the input size of {type(model).__name__}")


def build_model(cfg: TrainConfig, info: dict, tokenizer=None):
    """The adapter of the model cfg.model for `info` (num_classes, and for our ViT in_chans/image_size).
    Language models: `tokenizer` is the run's tokenizer (None: the model's own)."""
    from ..models import VisionTransformer, ViTConfig, adapt, load_model

    torch.manual_seed(cfg.seed)
    if info.get("kind") == "lm":
        return _build_language_model(cfg, info, tokenizer)
    C = info["num_classes"]
    if cfg.model == "vit":
        try:
            vit_cfg = ViTConfig(image_size=info["image_size"], in_chans=info["in_chans"], patch_size=cfg.vit_patch,
                                depth=cfg.vit_depth, width=cfg.vit_width, heads=cfg.vit_heads,
                                mlp_ratio=cfg.vit_mlp_ratio, num_classes=C,
                                multi_exit=cfg.objective == "multi_exit")
        except ValueError as e:
            raise ConfigError(f"the vit_* keys do not make a valid ViT: {e}") from e
        adapter = adapt(VisionTransformer(vit_cfg), final_norm=cfg.final_norm)
    else:
        adapter = load_model(cfg.model, num_labels=C if cfg.new_head else None, final_norm=cfg.final_norm,
                             max_length=cfg.max_length)
        adapter.model.train()
    if cfg.pooling:
        try:
            adapter.set_readout_pooling(cfg.pooling)
        except ValueError as e:
            raise ConfigError(f"pooling={cfg.pooling!r}: {e}; set pooling to '' (the model's own)") from e
    return adapter


def _build_language_model(cfg: TrainConfig, info: dict, tokenizer):
    """A causal LM: model "gpt" is GPT-2's architecture built from the gpt_* keys (random weights, vocabulary
    info["vocab_size"]), any other name a pretrained causal LM (`load_model`) with its own tokenizer or
    `tokenizer` (which must fit its vocabulary)."""
    from ..models import adapt, load_model

    if cfg.model == "gpt":
        from transformers import GPT2Config, GPT2LMHeadModel

        if tokenizer is None:
            raise ConfigError("model gpt is trained from scratch and has no tokenizer of its own: set tokenizer to "
                              "bpe (trained on the training split) or to a tokenizer's name or folder")
        if cfg.gpt_width % cfg.gpt_heads:
            raise ConfigError(f"gpt_width {cfg.gpt_width} is not divisible by gpt_heads {cfg.gpt_heads}")
        eos = tokenizer.eos_token_id
        config = GPT2Config(vocab_size=info.get("vocab_size") or len(tokenizer), n_positions=cfg.seq_len,
                            n_embd=cfg.gpt_width, n_layer=cfg.gpt_depth, n_head=cfg.gpt_heads,
                            resid_pdrop=cfg.gpt_dropout, embd_pdrop=cfg.gpt_dropout, attn_pdrop=cfg.gpt_dropout,
                            bos_token_id=eos, eos_token_id=eos)
        adapter = adapt(GPT2LMHeadModel(config), tokenizer, final_norm=cfg.final_norm, max_length=cfg.seq_len,
                        name=f"gpt-{cfg.gpt_depth}x{cfg.gpt_width}")
    else:
        if cfg.tokenizer == "bpe":
            raise ConfigError(f"tokenizer=bpe trains a new vocabulary, which the pretrained {cfg.model} cannot read "
                              "(its token ids would mean other tokens): set tokenizer to '' (the model's own), or "
                              "train model gpt from scratch")
        adapter = load_model(cfg.model, final_norm=cfg.final_norm, max_length=cfg.seq_len)
        if not adapter.vocabulary_readout:
            raise ConfigError(f"data={cfg.data} trains a causal language model, but {cfg.model} is a "
                              f"{type(adapter).__name__}; use model gpt or a causal LM (gpt2, smollm2-135m, ...)")
        if tokenizer is not None:
            if len(tokenizer) > adapter.num_classes:
                raise ValueError(f"the tokenizer {cfg.tokenizer} has {len(tokenizer)} tokens but {cfg.model} reads "
                                 f"out only {adapter.num_classes}: the tokenizer and the model do not belong "
                                 "together; set tokenizer to '' (the model's own)")
            adapter.tokenizer = tokenizer
        elif adapter.tokenizer is None:
            raise ConfigError(f"{cfg.model} comes without a tokenizer: set tokenizer to its name or folder")
    if adapter.max_positions < cfg.seq_len:
        raise ConfigError(f"seq_len={cfg.seq_len} exceeds the context of {cfg.model} ({adapter.max_positions} "
                          f"positions); set seq_len to at most {adapter.max_positions}")
    if info.get("vocab_size") is not None and adapter.num_classes != info["vocab_size"]:
        raise ValueError(f"the model {cfg.model} reads out {adapter.num_classes} tokens but the run was trained "
                         f"with {info['vocab_size']}: the tokenizer and the model do not belong together")
    adapter.model.train()
    return adapter


# ---- language modelling ------------------------------------------------------------------------------------
def _lm_documents(cfg: TrainConfig) -> tuple:
    """(train documents, test documents) of a language-modelling source."""
    root = cfg.data_root or None
    if cfg.data == "english-corpus":
        corpus = D.load_english_corpus(seed=cfg.data_seed)
        return corpus.train, corpus.test
    if cfg.data == "wikitext103":
        corpus = D.load_wikitext103_corpus(local_dir=root)
        return corpus.train, corpus.test
    if root is None:
        raise ConfigError("data=text-file needs data_root: the path of a UTF-8 text file (one document per line; "
                          "the last 10% of the lines are the test split)")
    try:
        d = D.load_text_file(root)
    except ValueError as e:  # a file too short to give both splits: the config's data_root does not serve
        raise ConfigError(f"data_root: {e}") from e
    return list(d.train_texts), list(d.test_texts)


def run_tokenizer(cfg: TrainConfig, train_texts=None):
    """The tokenizer of a language-modelling run: None (the model's own, cfg.tokenizer ''), a byte-level BPE
    trained on the training split (bpe), or one loaded by name or folder."""
    if not cfg.tokenizer:
        return None
    if cfg.tokenizer == "bpe":
        if train_texts is None:
            train_texts = _lm_documents(cfg)[0]
        return D.train_bpe_tokenizer(train_texts, cfg.vocab_size)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(cfg.tokenizer)
    except (OSError, ValueError) as e:
        raise ConfigError(f"tokenizer={cfg.tokenizer!r} cannot be loaded ({e}); use '' (the model's own), bpe, or "
                          "the name or folder of a Hugging Face tokenizer") from e


def packed_sequences(tokenizer, texts, seq_len: int, what: str) -> torch.Tensor:
    """(n, seq_len) token ids of `texts` (`layersim.data.tokenize_and_pack`), cached under
    ``default_cache_dir()/tokens`` keyed by the texts, the tokenizer's vocabulary and seq_len."""
    from ..models import tokenizer_fingerprint

    spec = tokenizer_fingerprint(tokenizer)
    key = stable_hash({"texts": D._texts_digest(texts), "tokenizer": spec, "seq_len": int(seq_len), "format": 1})
    folder = default_cache_dir() / "tokens"
    path = folder / f"{what}-{key[:24]}.pt"

    def build(path: Path) -> torch.Tensor:
        try:
            sequences = D.tokenize_and_pack(tokenizer, texts, seq_len)
        except ValueError as e:
            raise ConfigError(f"the {what} split: {e}") from e
        atomic_save(sequences, path)
        return sequences

    return load_or_build(path, lambda p: torch.load(p, weights_only=True), build,
                         lock=folder / f".{path.name}.lock", what="token cache")


def _seq_subset(x: torch.Tensor, n: int, seed: int, what: str) -> torch.Tensor:
    if n == 0 or n == len(x):
        return x
    if n > len(x):
        raise ConfigError(f"{what}={n} sequences but the split packs into only {len(x)}; lower it or set it to 0 "
                          "(all)")
    return x[torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(len(x))[:n]))]


def build_lm_task(cfg: TrainConfig) -> "Task":
    """A causal language-modelling task: packed token sequences and a causal LM that reads them."""
    if cfg.augment:
        raise ConfigError(f"augment={cfg.augment!r} applies to images; {cfg.data} is text: set augment to ''")
    train_texts, test_texts = _lm_documents(cfg)
    for what, texts in (("train", train_texts), ("test", test_texts)):
        if not texts or not any(t.strip() for t in texts):
            raise ConfigError(f"the {what} split of {cfg.data} is empty: there is no text to "
                              f"{'train' if what == 'train' else 'evaluate'} a language model on")
    tokenizer = run_tokenizer(cfg, train_texts)
    info = {"kind": "lm", "source": cfg.data, "seq_len": cfg.seq_len, "classes": []}
    adapter = build_model(cfg, info, tokenizer)
    tokenizer = adapter.tokenizer
    info["vocab_size"] = info["num_classes"] = adapter.num_classes
    train = _seq_subset(packed_sequences(tokenizer, train_texts, cfg.seq_len, "train"), cfg.n_train,
                        cfg.data_seed, "n_train")
    test = _seq_subset(packed_sequences(tokenizer, test_texts, cfg.seq_len, "test"), cfg.n_test,
                       cfg.data_seed + 1, "n_test")
    top = int(max(train.max(), test.max()))
    if top >= adapter.num_classes:
        raise ValueError(f"the text was tokenised into ids up to {top}, but {adapter.name} reads out "
                         f"{adapter.num_classes} tokens: the tokenizer and the model do not belong together")
    info.update(train_tokens=int(train.numel()), test_tokens=int(test.numel()), tokenizer_size=len(tokenizer))
    dummy = lambda x: torch.zeros(len(x), dtype=torch.long)  # noqa: E731 - the targets are the next tokens
    return Task(adapter, Split(train, dummy(train)), Split(test, dummy(test)), [], "lm", info, None,
                tokenizer=tokenizer if cfg.tokenizer else None, input_key="input_ids")


def build_task(cfg: TrainConfig) -> Task:
    """Load data and model for `cfg` and check that they fit. Raises ConfigError / ValueError."""
    if cfg.data in LM_SOURCES:
        return build_lm_task(cfg)
    if cfg.model == "gpt":
        raise ConfigError(f"model gpt is a language model; data={cfg.data} is a classification task: use data "
                          f"{' | '.join(LM_SOURCES)}")
    train, test, classes, kind = load_splits(cfg)
    C = len(classes)
    if cfg.num_classes and cfg.num_classes != C:
        raise ConfigError(f"num_classes={cfg.num_classes} but {cfg.data} has {C} classes ({', '.join(classes[:10])}"
                          f"{', ...' if C > 10 else ''}); set num_classes to 0 (= the data's) or {C}")
    for name, split in (("train", train), ("test", test)):
        lo, hi = int(split.labels.min()), int(split.labels.max())
        if lo < 0 or hi >= C:
            raise ValueError(f"the {name} labels of {cfg.data} run from {lo} to {hi}, outside 0..{C - 1}")
    info: dict = {"num_classes": C, "classes": classes, "kind": kind, "source": cfg.data}
    if kind == "text":
        if cfg.augment:
            raise ConfigError(f"augment={cfg.augment!r} applies to images; {cfg.data} is text: set augment to ''")
    else:
        x0 = train.take([0])[0]
        info["in_chans"], info["image_size"] = int(x0.shape[1]), cfg.image_size or int(x0.shape[-1])
        if cfg.model == "vit" and x0.shape[-1] != x0.shape[-2] and not cfg.image_size:
            raise ConfigError(f"our ViT takes square images; {cfg.data} has {tuple(x0.shape[-2:])}: set image_size")
    adapter = build_model(cfg, info)
    if adapter.num_classes != C:
        raise ValueError(f"the model {cfg.model} has {adapter.num_classes} classes but the data {cfg.data} has {C}: "
                         + ("use new_head=true to attach a fresh head with the data's classes"
                            if not cfg.new_head else "this model's head cannot be replaced; choose data with "
                            f"{adapter.num_classes} classes or another model"))
    pipeline = None
    if kind == "image":
        chans, size, model_mean, model_std = _image_input(adapter.model)
        if info["in_chans"] not in (1, chans):
            raise ValueError(f"the images of {cfg.data} have {info['in_chans']} channels, the model takes {chans}")
        if cfg.image_size and cfg.image_size != size:
            raise ConfigError(f"image_size={cfg.image_size} but the model {cfg.model} takes {size}x{size} images; "
                              f"set image_size to 0 or {size}")
        mode = cfg.normalize
        if mode == "auto":
            mode = "model" if model_mean is not None else "dataset"
        if mode == "model":
            if model_mean is None:
                raise ConfigError(f"normalize=model but {cfg.model} states no mean/std; use dataset or none")
            mean, std = tuple(model_mean), tuple(model_std)
        elif mode == "dataset":
            mean, std = _channel_stats(train)
        else:
            mean, std = (0.0,) * chans, (1.0,) * chans
        augment = tuple(filter(None, cfg.augment.split("+")))
        pipeline = ImagePipeline(chans, size, mean, std, augment, cfg.crop_padding)
        info.update(model_in_chans=chans, model_image_size=size, mean=list(mean), std=list(std))
    return Task(adapter, train, test, classes, kind, info, pipeline)


def pipeline_from_info(info: dict) -> Optional[ImagePipeline]:
    """The evaluation-time image preparation of a trained model (None for text)."""
    if info.get("kind") != "image":
        return None
    return ImagePipeline(info["model_in_chans"], info["model_image_size"], tuple(info["mean"]), tuple(info["std"]))


def lm_test_sequences(cfg: TrainConfig, tokenizer) -> torch.Tensor:
    """(n, seq_len) token ids of the test split a language-modelling run `cfg` is evaluated on (the same
    sequences as in training's evaluation; packed once and cached). `tokenizer`: the run's
    (``run.adapter.tokenizer``)."""
    if cfg.data not in LM_SOURCES:
        raise ValueError(f"{cfg.name} trains on {cfg.data}, not on text for language modelling")
    test_texts = _lm_documents(cfg)[1]
    return _seq_subset(packed_sequences(tokenizer, test_texts, cfg.seq_len, "test"), cfg.n_test, cfg.data_seed + 1,
                       "n_test")
