"""Data and model of a training run, behind one small interface the loop uses without knowing the family.

`build_task(cfg)` loads the data (`layersim.data`) and the model (`layersim.models`), checks that they
fit (class count, image channels), and returns a `Task`:

- ``task.adapter``: the model's adapter (hidden_states / pool / targets / readout_vectors);
- ``task.train_batch(indices, rank_rows, step_seed)``: the model input and labels of this rank's rows of
  a global batch, augmented with randomness drawn for the *whole* global batch from `step_seed` (so the
  samples get the same augmentation whatever the number of ranks, and on a resumed run);
- ``task.eval_batch(indices)``: the same without augmentation;
- ``task.info``: what is needed to rebuild the model and its input pipeline (saved with the weights).

Images are kept as float tensors in [0, 1] and prepared per batch: augmentation (random crop with
padding, horizontal flip, RandAugment), resizing to the model's input size, grey -> RGB when the model
wants 3 channels, normalisation. Texts are lists of strings, tokenised by the adapter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from .. import data as D
from .config import ConfigError, TrainConfig


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
    else:  # glue/<task>
        d = D.load_glue(cfg.data.split("/", 1)[1], local_dir=root)
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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _prepare(self, inputs, draws=None):
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


def build_model(cfg: TrainConfig, info: dict):
    """The adapter of the model cfg.model for `info` (num_classes, and for our ViT in_chans/image_size)."""
    from ..models import VisionTransformer, ViTConfig, adapt, load_model

    torch.manual_seed(cfg.seed)
    C = info["num_classes"]
    if cfg.model == "vit":
        try:
            vit_cfg = ViTConfig(image_size=info["image_size"], in_chans=info["in_chans"], patch_size=cfg.vit_patch,
                                depth=cfg.vit_depth, width=cfg.vit_width, heads=cfg.vit_heads,
                                mlp_ratio=cfg.vit_mlp_ratio, num_classes=C,
                                multi_exit=cfg.objective == "multi_exit")
        except ValueError as e:
            raise ConfigError(f"the vit_* keys do not make a valid ViT: {e}") from e
        return adapt(VisionTransformer(vit_cfg), final_norm=cfg.final_norm)
    adapter = load_model(cfg.model, num_labels=C if cfg.new_head else None, final_norm=cfg.final_norm,
                         max_length=cfg.max_length)
    adapter.model.train()
    return adapter


def build_task(cfg: TrainConfig) -> Task:
    """Load data and model for `cfg` and check that they fit. Raises ConfigError / ValueError."""
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
