"""Checkpoints of a training run: written atomically, verified on load, refused when from another config.

``checkpoint.pt`` holds the latest state (weights of every trained module, optimizer, scheduler, RNG states
of torch / numpy / python (and CUDA), the data-order position, the number of log lines written), and a
content hash of all of it. Before a new one is written the previous one is renamed to
``checkpoint.prev.pt``, so a kill at any moment leaves at least one complete checkpoint. On load, an
unreadable or corrupt ``checkpoint.pt`` is moved aside (``checkpoint.pt.corrupt``) and the previous one is
used; when neither is good the error names both files.
"""
from __future__ import annotations

import hashlib
import os
import random
import warnings
from pathlib import Path

import numpy as np
import torch

from ..storage import atomic_save, hash_tensor

FORMAT = "layersim.train.checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


class CheckpointError(ValueError):
    """No usable checkpoint: unreadable, corrupt, or written by a run with another config."""


def _hash_into(digest, obj) -> None:
    if isinstance(obj, torch.Tensor):
        hash_tensor(digest, obj)
    elif isinstance(obj, dict):
        digest.update(b"{")
        for key in sorted(obj, key=repr):
            digest.update(repr(key).encode())
            _hash_into(digest, obj[key])
        digest.update(b"}")
    elif isinstance(obj, (list, tuple)):
        digest.update(b"[")
        for item in obj:
            _hash_into(digest, item)
        digest.update(b"]")
    else:
        digest.update(repr(obj).encode())


def content_hash(state: dict) -> str:
    """blake2b over every tensor (dtype, shape, bytes) and value of a checkpoint, except its own hash."""
    digest = hashlib.blake2b(digest_size=16)
    _hash_into(digest, {k: v for k, v in state.items() if k != "content_hash"})
    return digest.hexdigest()


# ---- RNG states ------------------------------------------------------------------------------------------
def rng_state() -> dict:
    """The global RNG states of python, numpy, torch (and CUDA), in a form torch.load(weights_only) reads."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(obj):
    return tuple(_tuples(x) for x in obj) if isinstance(obj, (list, tuple)) else obj


# ---- save / load -----------------------------------------------------------------------------------------
def save(state: dict, folder: Path) -> Path:
    """Write `state` as folder/checkpoint.pt atomically, keeping the one before as checkpoint.prev.pt."""
    state = dict(state, format=FORMAT, version=VERSION)
    state["content_hash"] = content_hash(state)
    path, previous = folder / CHECKPOINT, folder / PREVIOUS
    if path.exists():
        os.replace(path, previous)
    return atomic_save(state, path)


def _read(path: Path) -> dict:
    """Load and verify one checkpoint file; ValueError with the reason when it is not good."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, garbage, unpickling error...
        raise ValueError(f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError("not a layersim training checkpoint")
    if state.get("version") != VERSION:
        raise ValueError(f"written by checkpoint format version {state.get('version')}, this is {VERSION}")
    if state.get("content_hash") != content_hash(state):
        raise ValueError("its content does not match its hash (corrupt)")
    return state


def load(folder: Path, identity_hash: str, *, describe_difference=None, writer: bool = True) -> dict | None:
    """The latest good checkpoint in `folder` (None when there is none).

    A bad checkpoint.pt falls back to checkpoint.prev.pt (with a warning; the bad file is moved aside to
    checkpoint.pt.corrupt, by the `writer` only). A checkpoint of another config raises CheckpointError,
    never loads.
    """
    candidates = [p for p in (folder / CHECKPOINT, folder / PREVIOUS) if p.exists()]
    if not candidates:
        return None
    problems = []
    for path in candidates:
        try:
            state = _read(path)
        except ValueError as e:
            problems.append(f"{path}: {e}")
            continue
        if state["identity_hash"] != identity_hash:
            detail = describe_difference(state["identity"]) if describe_difference else ""
            raise CheckpointError(f"{path} was written by a training run with a different config"
                                  + (f" ({detail})" if detail else "") + "; it is not loaded. Train into another "
                                  "--out folder, or pass --overwrite to discard that run")
        if problems and writer:
            bad = folder / CHECKPOINT
            warnings.warn(f"{problems[0]}; resuming from the previous checkpoint {path} (step "
                          f"{state['global_step']}) instead", RuntimeWarning, stacklevel=2)
            if bad.exists() and path != bad:
                os.replace(bad, bad.with_name(CHECKPOINT + ".corrupt"))
        return state
    raise CheckpointError("no usable checkpoint to resume from: " + "; ".join(problems)
                          + ". Delete the file(s) to start the run over, or pass --overwrite")
