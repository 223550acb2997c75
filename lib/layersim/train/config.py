"""The training configuration: one flat dataclass, recipes shipped as YAML, typed overrides.

A config is resolved from a recipe name (``lib/layersim/recipes/<name>.yaml``), a YAML file or a dict,
plus overrides ``key=value``. Every value is checked against the type of the field; unknown keys and
wrong types are a `ConfigError` (a ValueError) naming the key and what is allowed.

The *identity* of a run is the config without the keys that cannot change the trained weights
(`RUNTIME_KEYS`: name, device, checkpoint interval, evaluation batch size, progress bar), and without the
keys added after runs existed while they hold their default (`DEFAULT_FREE_KEYS`: ``layer_sampling: none``,
``sampled_fraction: 1``),
so that those runs keep their identity. Checkpoints, the run folder and the notebook cache are keyed by it.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ..losses import LAYER_SAMPLING, OBJECTIVES, WEIGHT_SCHEMES
from ..storage import stable_hash
from ..validate import real_number, whole_number

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"
SCHEDULES = ("cosine", "linear", "constant")
AUGMENTS = ("crop", "flip", "randaugment")
AMP_MODES = ("auto", "bf16", "off")
NORMALIZE = ("auto", "dataset", "model", "none")
LM_SOURCES = ("english-corpus", "wikitext103", "text-file")  # text for causal language modelling
DATA_SOURCES = ("fashion-mnist", "digits", "cifar10", "cifar100", "image-folder", "rotten-tomatoes") + LM_SOURCES + (
    "glue/<task>",)
POOLINGS = ("", "cls", "mean")
IDENTITY_VERSION = 1  # bump when the meaning of a key or the training loop's arithmetic changes


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type or out of range."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (see lib/layersim/recipes/*.yaml for complete examples)."""

    name: str = "custom"          # a label for the run folder; not part of the identity
    # ---- data
    data: str = "fashion-mnist"   # fashion-mnist | digits | cifar10 | cifar100 | image-folder | rotten-tomatoes | glue/<task>
    #                               language modelling: english-corpus | wikitext103 | text-file
    data_root: str = ""           # folder to read the source from ("": its default place; GLUE: a save_to_disk copy;
    #                               text-file: the file)
    n_train: int = 0              # seeded subset of the training split (0: all of it); language models: sequences
    n_test: int = 0               # seeded subset of the test split (0: all of it); language models: sequences
    data_seed: int = 0            # seed of the subsets and splits (kept apart from `seed`)
    num_classes: int = 0          # 0: the data's; otherwise must equal the data's class count
    # ---- model
    model: str = "vit"            # "vit": our ViT from the vit_* keys; else a name/path for layersim.models.load_model
    new_head: bool = True         # loaded models: attach a fresh head with the data's classes (False: keep theirs)
    vit_depth: int = 6
    vit_width: int = 128
    vit_heads: int = 4
    vit_patch: int = 7
    vit_mlp_ratio: float = 4.0
    image_size: int = 0           # 0: our ViT the data's size, a timm model its own input size
    normalize: str = "auto"       # auto (vit: dataset mean/std, timm: the model's) | dataset | model | none
    gpt_depth: int = 4            # model "gpt": a GPT-2-architecture model built from these keys, trained from scratch
    gpt_width: int = 128
    gpt_heads: int = 4
    gpt_dropout: float = 0.0      # model "gpt": dropout of embeddings, attention and residuals
    max_length: int = 128         # text classification: truncation in tokens
    pooling: str = ""             # classifiers: the pooled vector the head reads ("": the model's own, cls | mean)
    final_norm: bool = True       # pre-norm models: apply the final norm before the shared head on every layer
    # ---- language modelling (data english-corpus | wikitext103 | text-file)
    tokenizer: str = ""           # "": the model's own | bpe: byte-level BPE trained on the training split | a name/path
    vocab_size: int = 2048        # tokenizer bpe: its vocabulary (the LM head has this many outputs)
    seq_len: int = 128            # packed sequences of this many tokens (at most the model's context)
    # ---- objective
    objective: str = "standard"   # standard | aligned | multi_exit
    layer_weights: str = ""       # "" (objective's default) | linear | uniform | last | comma-separated numbers
    layer_sampling: str = "none"  # aligned only: none (every layer) | token | step | rotation: layer L plus one
    #                               sampled layer per token / per step, or in turn (layersim.losses.layer_draws)
    sampled_fraction: float = 1.0 # layer_sampling token: the share of tokens that read their sampled layer (0-1]
    label_smoothing: float = 0.0
    # ---- optimisation
    epochs: int = 3
    batch_size: int = 128         # the global batch (split over the ranks under torchrun)
    grad_accum: int = 1           # micro-batches per optimizer step on each rank (same result, less memory)
    max_steps: int = 0            # optimizer steps in all (0: epochs x steps per epoch); evaluation after each epoch
    #                               and at the end
    lr: float = 1e-3
    weight_decay: float = 0.05    # AdamW, on weight matrices only (not on biases, norms, 1-d parameters)
    warmup: float = 0.1           # fraction of all optimizer steps spent warming up linearly from 0
    schedule: str = "cosine"      # after warm-up: cosine | linear (to 0) | constant
    grad_clip: float = 1.0        # max global gradient norm (0: off)
    augment: str = ""             # images: "" or "+"-joined crop, flip, randaugment (e.g. "crop+flip")
    crop_padding: int = 2         # random crop: pad by this many pixels, crop back to size
    amp: str = "auto"             # auto: bf16 autocast where the hardware has it (CUDA with bf16) | bf16 | off
    seed: int = 0                 # initialisation, data order, augmentation, dropout
    # ---- runtime (do not change the result)
    device: str = "auto"          # auto (cuda if available) | cpu | cuda
    checkpoint_every: int = 0     # optimizer steps between checkpoints (0: at the end of every epoch only)
    eval_batch_size: int = 256
    progress: bool = True

    def __post_init__(self):
        check(self)


RUNTIME_KEYS = ("name", "device", "checkpoint_every", "eval_batch_size", "progress")
# left out of the identity at these values (added after runs existed)
DEFAULT_FREE_KEYS = {"layer_sampling": "none", "sampled_fraction": 1.0}
KEYS = tuple(f.name for f in fields(TrainConfig))


def _field_types() -> dict:
    hints = typing.get_type_hints(TrainConfig)
    return {name: hints[name] for name in KEYS}


def _choice(cfg, key, allowed):
    value = getattr(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _in_range(cfg, key, check, **limits):
    """`check` (`real_number` / `whole_number`) of config key `key`, its ValueError as a ConfigError."""
    try:
        check(getattr(cfg, key), key, **limits)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check(cfg: TrainConfig) -> None:
    """Check types and ranges of every key (run by TrainConfig itself)."""
    types = _field_types()
    for key in KEYS:
        value = getattr(cfg, key)
        setattr(cfg, key, coerce(key, value, types[key]))
    _choice(cfg, "objective", OBJECTIVES)
    _choice(cfg, "layer_sampling", LAYER_SAMPLING)
    if cfg.layer_sampling != "none" and cfg.objective != "aligned":
        raise ConfigError(f"layer_sampling {cfg.layer_sampling!r} estimates the aligned loss: it needs objective "
                          f"aligned, not {cfg.objective!r} (or layer_sampling none)")
    _in_range(cfg, "sampled_fraction", real_number, low=0.0, high=1.0, low_open=True)
    if cfg.sampled_fraction != 1.0 and cfg.layer_sampling != "token":
        raise ConfigError(f"sampled_fraction {cfg.sampled_fraction} thins the per-token draws: it needs "
                          f"layer_sampling token, not {cfg.layer_sampling!r} (or sampled_fraction 1)")
    _choice(cfg, "schedule", SCHEDULES)
    _choice(cfg, "amp", AMP_MODES)
    _choice(cfg, "normalize", NORMALIZE)
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {cfg.device!r}")
    known = DATA_SOURCES[:-1]
    if cfg.data not in known and not (cfg.data.startswith("glue/") and len(cfg.data) > 5):
        raise ConfigError(f"data must be one of {', '.join(DATA_SOURCES)}; got {cfg.data!r}")
    for part in filter(None, cfg.augment.split("+")):
        if part not in AUGMENTS:
            raise ConfigError(f"augment is '' or a '+'-joined list of {', '.join(AUGMENTS)}; got {cfg.augment!r}")
    _choice(cfg, "pooling", POOLINGS)
    positive = ("epochs", "batch_size", "eval_batch_size", "vit_depth", "vit_width", "vit_heads", "vit_patch",
                "max_length", "gpt_depth", "gpt_width", "gpt_heads", "grad_accum", "seq_len")
    if cfg.seq_len < 2:
        raise ConfigError(f"seq_len must be >= 2 (an input token and its next token); got {cfg.seq_len}")
    if cfg.vocab_size < 258:
        raise ConfigError(f"vocab_size must be >= 258 (256 byte symbols and 2 special tokens); got {cfg.vocab_size}")
    if not 0.0 <= cfg.gpt_dropout < 1.0:
        raise ConfigError(f"gpt_dropout must be in [0, 1); got {cfg.gpt_dropout}")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1; got {getattr(cfg, key)}")
    for key in ("n_train", "n_test", "num_classes", "image_size", "checkpoint_every", "crop_padding", "max_steps"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0 (0 means: {_ZERO_MEANS[key]}); got {getattr(cfg, key)}")
    if not 0.0 <= cfg.warmup < 1.0:
        raise ConfigError(f"warmup is the fraction of steps spent warming up, in [0, 1); got {cfg.warmup}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1); got {cfg.label_smoothing}")
    for key in ("lr", "vit_mlp_ratio"):  # finite: an infinite lr diverges at step 2, an infinite ratio allocates forever
        _in_range(cfg, key, real_number, low=0, low_open=True, what="a finite number > 0")
    for key in ("weight_decay", "grad_clip"):  # a NaN grad_clip would silently turn clipping off
        _in_range(cfg, key, real_number, low=0, what="a finite number >= 0" + (" (0: off)" if key == "grad_clip" else ""))
    for key in ("seed", "data_seed"):  # numpy refuses negative seeds, late: after the run folder was written
        _in_range(cfg, key, whole_number, low=0)
    layer_weights(cfg)  # parses


_ZERO_MEANS = {"n_train": "all", "n_test": "all", "num_classes": "the data's", "image_size": "automatic",
               "checkpoint_every": "epoch ends only", "crop_padding": "no padding",
               "max_steps": "epochs x steps per epoch"}


def layer_weights(cfg: TrainConfig):
    """The `layer_weights` key as `aligned_weights` takes it: None, a scheme name or a list of numbers."""
    text = cfg.layer_weights.strip()
    if not text:
        return None
    if text in WEIGHT_SCHEMES:
        return text
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"layer_weights must be '', one of {', '.join(WEIGHT_SCHEMES)} or comma-separated "
                          f"numbers (one per layer, e.g. 1,2,3,4,5,6); got {cfg.layer_weights!r}") from None


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def coerce(key: str, value: Any, kind: type) -> Any:
    """`value` (from YAML or the command line) as the type of config key `key`, or a ConfigError."""
    name = kind.__name__
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() in _TRUE + _FALSE:
                    return text.lower() in _TRUE
                raise ValueError
            if kind is int:
                return int(text)
            if kind is float:
                return float(text)
        except ValueError:
            raise ConfigError(f"{key} expects {'a' if name != 'int' else 'an'} {name}, got {value!r}"
                              + (" (true or false)" if kind is bool else "")) from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if value is None and kind is str:
        return ""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key} expects {'an' if name == 'int' else 'a'} {name}, got {value!r} "
                          f"({type(value).__name__})")
    return value


# ---- resolving --------------------------------------------------------------------------------------------
def recipes() -> list:
    """Names of the recipes shipped with the package."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def unknown_key_error(key: str) -> ConfigError:
    return ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(KEYS)}")


def resolve(config: "TrainConfig | dict | str | Path | None" = None, overrides: dict | None = None) -> TrainConfig:
    """A TrainConfig from a recipe name, a YAML file, a dict or a TrainConfig, with `overrides` applied.

    Raises ConfigError for an unknown recipe or key, or a value of the wrong type.
    """
    if config is None:
        base = {}
    elif isinstance(config, TrainConfig):
        base = asdict(config)
    elif isinstance(config, dict):
        base = dict(config)
    elif isinstance(config, (str, Path)):
        path = Path(config)
        if path.suffix in (".yaml", ".yml") or path.is_file():
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist")
            base = _read_yaml(path)
        elif (RECIPE_DIR / f"{config}.yaml").is_file():
            base = _read_yaml(RECIPE_DIR / f"{config}.yaml")
            base.setdefault("name", str(config))
        else:
            raise ConfigError(f"{config!r} is neither a recipe ({', '.join(recipes())}) nor a YAML file")
    else:
        raise ConfigError(f"config must be a recipe name, a YAML path, a dict or a TrainConfig; got "
                          f"{type(config).__name__}")
    merged = {**base, **(overrides or {})}
    for key in merged:
        if key not in KEYS:
            raise unknown_key_error(key)
    return TrainConfig(**merged)


def identity(cfg: TrainConfig) -> dict:
    """The keys that determine the trained weights (all but RUNTIME_KEYS), plus a format version."""
    out = {k: v for k, v in asdict(cfg).items() if k not in RUNTIME_KEYS}
    for key, default in DEFAULT_FREE_KEYS.items():  # keys added later: at their default, runs keep their identity
        if out[key] == default:
            del out[key]
    out["identity_version"] = IDENTITY_VERSION
    return out


def identity_hash(cfg: TrainConfig) -> str:
    return stable_hash(identity(cfg))


def differences(old: dict, new: dict) -> str:
    """'lr: 0.001 -> 0.002, epochs: 3 -> 4' for the keys whose values differ."""
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in keys
                     if old.get(k) != new.get(k))


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(asdict(cfg), sort_keys=False)


def replace(cfg: TrainConfig, **changes) -> TrainConfig:
    return dataclasses.replace(cfg, **changes)
