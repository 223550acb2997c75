"""The run folder: what a training run writes, and how a finished run is read back.

A run folder holds config.yaml (the resolved config), log.jsonl (one record per evaluation), checkpoint.pt
(and checkpoint.prev.pt) while training, model.pt at the end, and for a language model with its own
tokenizer a tokenizer/ folder beside model.pt. `load_run` reads a finished run back as a `TrainResult`;
`train_cached` keeps runs in the shared cache, one folder per config (`run_folder_name`).

Log records name the readers by prefix: ``layer_...`` (the shared last-layer classifier at every layer) and
``exit_...`` (a multi-exit model's own heads); see `layersim.train.evaluation`. Logs written before that
naming (``saturation_hist``, ``early_saturation`` for the shared head) are read under the new names
(`OLD_LOG_KEYS`), so cached runs keep working.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn
import yaml

from ..storage import atomic_write_text, clean_leftovers, default_cache_dir, load_or_build
from . import checkpoint as ckpt
from .config import ConfigError, TrainConfig, differences, identity, identity_hash, resolve, to_yaml
from .tasks import Split, build_model, lm_test_sequences, load_splits, pipeline_from_info

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
MODEL_FILE = "model.pt"
LOCK_FILE = ".lock"
RUN_FILES = (CONFIG_FILE, LOG_FILE, ckpt.CHECKPOINT, ckpt.PREVIOUS, ckpt.CHECKPOINT + ".corrupt", MODEL_FILE)
MODEL_FORMAT = "layersim.train.model"
TOKENIZER_DIR = "tokenizer"  # a language model's own tokenizer (tokenizer: bpe or a name), beside model.pt

# log keys of runs written before every reader had its own prefix -> their names now
OLD_LOG_KEYS = {"saturation_hist": "layer_saturation_hist", "early_saturation": "layer_early_saturation"}


class RunConflictError(ValueError):
    """The output folder holds something this run must not overwrite (another config, foreign files)."""


# ---- results -----------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """A trained model and what its training recorded.

    adapter: the model's adapter (``result.model`` is the model); heads: the ExitHeads of a multi-exit
    model (None otherwise); layer_acc: (L) test accuracy of the shared last-layer classifier at layers
    1..L after the last epoch; exit_acc: each layer's own exit head (multi-exit only); log: the records
    of log.jsonl; dir: the run folder; info: the data the model was trained on (classes, input
    normalisation); trained: whether this call trained (False when it read a finished run back).
    `test_split()` is the test split the run was evaluated on, `prepare(inputs)` readies its images for
    the model.
    """

    adapter: Any
    heads: Optional[nn.Module]
    config: TrainConfig
    layer_acc: list
    exit_acc: Optional[list]
    log: list
    dir: Path
    info: dict = field(default_factory=dict)
    trained: bool = False  # this call ran training steps (False: read back from a finished run)
    _test: Optional[Split] = field(default=None, init=False, repr=False, compare=False)

    @property
    def model(self) -> nn.Module:
        return self.adapter.model

    @property
    def modality(self) -> str:
        """What the model reads: "image" or "text" (classification), "lm" (language modelling)."""
        return self.info["kind"]

    @property
    def classes(self) -> list:
        """The class names of a classification run ([] for a language model)."""
        return list(self.info.get("classes", []))

    def test_split(self) -> Split:
        """The test split the run was evaluated on, in the same order: built from the run's config the first
        time it is asked for, then kept. ``split.take(indices)`` gives (inputs, labels): images (k, C, H, W)
        in [0, 1] (`prepare` readies them for the model), a list of k texts, or for a language model
        (k, seq_len) token ids (labels all 0: the targets are the next tokens)."""
        if self._test is None:
            if self.modality == "lm":
                sequences = lm_test_sequences(self.config, self.adapter.tokenizer)
                self._test = Split(sequences, torch.zeros(len(sequences), dtype=torch.long))
            else:
                self._test = load_splits(self.config)[1]
        return self._test

    def prepare(self, inputs):
        """Images (n, C, H, W) in [0, 1] -> the model's input (resized, normalised as in training);
        texts are returned unchanged."""
        pipeline = pipeline_from_info(self.info)
        return pipeline(inputs) if pipeline is not None else inputs


# ---- the log ---------------------------------------------------------------------------------------------------
def _current_keys(record: dict) -> dict:
    if not any(old in record for old in OLD_LOG_KEYS):
        return record
    return {OLD_LOG_KEYS.get(k, k): v for k, v in record.items()}


def read_log(folder: Path) -> list:
    """The complete records of `folder`/log.jsonl (a line cut by a kill ends it), old keys renamed."""
    path = folder / LOG_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(_current_keys(json.loads(line)))
        except json.JSONDecodeError:
            break  # a line cut by a kill: only complete lines count
    return records


def keep_log(folder: Path, count: int) -> None:
    """Rewrite log.jsonl with its first `count` records (those of the checkpoint a run resumes from)."""
    kept = read_log(folder)[:count]
    atomic_write_text(folder / LOG_FILE, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))


def append_log(folder: Path, record: dict) -> None:
    with open(folder / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---- the folder ------------------------------------------------------------------------------------------------
def _saved_config(folder: Path) -> TrainConfig:
    path = folder / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return resolve(data if isinstance(data, dict) else {"?": data})
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError, TypeError) as e:
        raise RunConflictError(f"{path} cannot be read as a training config ({e}); nothing was changed. Train "
                               "into another --out folder, or pass --overwrite to discard that run") from e


def run_folder(out, what: str = "out") -> Path:
    """`out` as the Path of a run folder, or a ValueError sentence: an empty path (an unset shell variable would
    train into the current folder) or a path that is a file."""
    if out is None or not str(out).strip():
        raise ValueError(f"{what} must name a folder for the run, got {str(out)!r} (an empty path would train into "
                         "the current folder); give --out DIR")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{what} {out} is a file, not a folder: choose another run folder")
    return out


def make_folder(out: Path, what: str = "out") -> bool:
    """Create `out` (and its parents); whether it was created here. A sentence when it cannot be used."""
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{what} {out} cannot be used as a run folder ({e.strerror or e}); choose another "
                         "folder") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {out} cannot be used as a run folder (not writable); choose another folder")
    return created


def discard_unstarted(out: Path, created: bool) -> None:
    """After a start that failed before its first checkpoint (a value refused late, Ctrl-C): remove the
    config.yaml and log.jsonl it wrote, and the folder when this start created it, so that nothing blocks the
    corrected command. A folder with a checkpoint or model.pt is kept as it is (it resumes)."""
    if any((out / name).exists() for name in (ckpt.CHECKPOINT, ckpt.PREVIOUS, MODEL_FILE)):
        return
    for name in (CONFIG_FILE, LOG_FILE):
        (out / name).unlink(missing_ok=True)
    if created and {p.name for p in out.iterdir()} <= {LOCK_FILE}:
        (out / LOCK_FILE).unlink(missing_ok=True)
        try:
            out.rmdir()
        except OSError:
            pass


def prepare_folder(out: Path, cfg: TrainConfig, overwrite: bool) -> None:
    """Rank 0: refuse to touch a folder holding another run (unless `overwrite`), write config.yaml."""
    out.mkdir(parents=True, exist_ok=True)
    clean_leftovers(out)
    entries = [p for p in out.iterdir() if p.name != LOCK_FILE]
    if entries:
        if (out / CONFIG_FILE).exists():
            try:
                old = _saved_config(out)
                same = identity(old) == identity(cfg)
                why = f"differs in {differences(identity(old), identity(cfg))}"
            except RunConflictError as e:
                same, why = False, str(e)
        else:
            same, why = False, "no config.yaml: it is not a layersim training run"
        if not same and not overwrite:
            raise RunConflictError(f"{out} already holds something else ({why}); nothing was changed. Train into "
                                   "another --out folder, or pass --overwrite (overwrite=True) to discard what "
                                   "the folder holds of a training run")
        if overwrite:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            if (out / TOKENIZER_DIR).exists():
                from ..storage import remove_folder

                remove_folder(out / TOKENIZER_DIR)
    atomic_write_text(out / CONFIG_FILE, to_yaml(cfg))


def save_tokenizer(tokenizer, folder: Path) -> None:
    """Write `tokenizer` (save_pretrained) into `folder`, replacing it atomically."""
    from ..storage import atomic_folder

    with atomic_folder(folder, replace=True) as tmp:
        tokenizer.save_pretrained(str(tmp))


# ---- the model file ----------------------------------------------------------------------------------------------
def model_payload(adapter, heads, cfg: TrainConfig, info: dict, record: dict) -> dict:
    """What model.pt holds: the weights (and separate exit heads), the config and the last accuracies."""
    from ..models import VisionTransformer

    model_params = {id(p) for p in adapter.model.parameters()}
    separate_heads = heads is not None and not {id(p) for p in heads.parameters()} <= model_params
    payload = {"format": MODEL_FORMAT, "train_config": asdict(cfg), "identity_hash": identity_hash(cfg),
               "info": info, "state_dict": adapter.model.state_dict(),
               "exit_heads": heads.state_dict() if separate_heads else None,
               "layer_acc": record.get("layer_acc"), "exit_acc": record.get("exit_acc")}
    if isinstance(adapter.model, VisionTransformer):  # also loadable by VisionTransformer.load / load_model
        payload["config"] = asdict(adapter.model.config)
    return payload


def load_run(out) -> TrainResult:
    """The finished run in folder `out` (config.yaml + model.pt) as a TrainResult (model in eval mode)."""
    from ..models import ExitHeads

    out = Path(out)
    path = out / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the run in {out} has not finished (run the same "
                                "training command again to resume it)")
    cfg = _saved_config(out)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is unreadable ({type(e).__name__}); delete it and run the training command "
                         "again (it resumes from the last checkpoint)") from e
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a model written by layersim.train")
    if payload["identity_hash"] != identity_hash(cfg):
        raise ValueError(f"{path} does not belong to the config in {out / CONFIG_FILE}")
    tokenizer = None
    if (out / TOKENIZER_DIR).is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(out / TOKENIZER_DIR))
    adapter = build_model(cfg, payload["info"], tokenizer)
    adapter.model.load_state_dict(payload["state_dict"])
    adapter.model.eval()
    heads = None
    if cfg.objective == "multi_exit":
        heads = ExitHeads.for_adapter(adapter)
        if payload["exit_heads"] is not None:
            heads.load_state_dict(payload["exit_heads"])
    return TrainResult(adapter, heads, cfg, payload["layer_acc"], payload["exit_acc"], read_log(out), out,
                       payload["info"])


# ---- the shared cache of runs --------------------------------------------------------------------------------
def run_folder_name(cfg: TrainConfig) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.name).strip("-") or "run"
    return f"{slug}-{cfg.objective}-{identity_hash(cfg)[:16]}"


def train_cached(config: "TrainConfig | dict | str | Path" = "vit-fashion-mnist", *,
                 cache_dir: "str | Path | None" = None, **overrides) -> TrainResult:
    """Train `config` (recipe name, YAML file, dict or TrainConfig, plus `overrides`), or return the cached
    result of an identical earlier run.

    The run lives in ``<cache_dir or default_cache_dir()/runs>/<name>-<objective>-<hash of the config>``.
    Two processes asking for the same run at once: one trains, the other waits for it and reuses the result.
    A run that was killed is resumed from its last checkpoint; an unreadable model.pt is retrained from there.
    """
    from .loop import train  # the loop builds on this module, so it is imported when a run must be trained

    cfg = resolve(config, overrides)
    root = run_folder(cache_dir, "cache_dir") if cache_dir is not None else default_cache_dir() / "runs"
    make_folder(root, "the cache folder")
    out = root / run_folder_name(cfg)
    # an unreadable model.pt is removed and the run trained again from its last checkpoint
    return load_or_build(out / MODEL_FILE, lambda _: load_run(out), lambda _: train(cfg, out),
                         lock=root / f"{out.name}.lock", damaged=(ValueError, RuntimeError, KeyError),
                         what="the model file of cached run")
