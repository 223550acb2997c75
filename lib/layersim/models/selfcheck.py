"""The self-check: an adapter proves on a small probe batch that it reads its model exactly, or is refused.

Run when an adapter is made (``check=False`` skips it; a model on the meta device, whose weights hold no
numbers, is not checked). On ``adapter.probe_batch()`` (two small inputs; its own random generator, so the
global RNG is untouched) it checks, in eval mode and without gradients:

1. **blocks**: where the adapter knows the model's blocks, the output of block l recorded by a hook during the
   model's *own* forward equals layer l of ``hidden_states(batch)`` (raw block outputs, no final norm);
2. **truncated forwards**: ``hidden_states(batch, upto=l)`` equals layers 1..l of the full forward, for every l;
3. **layer L is the model's prediction**: the reader (the shared last-layer classifier) on layer L's head
   inputs equals ``logits(batch)`` (for a causal LM at every position that has a next token); for a model
   without a head, **layer L is the model's output**: the final norm on layer L equals the features the
   model returns (``final_features``), where the adapter knows them;
4. **block stepping**, where the adapter can run block by block (``begin``/``run_blocks``): the state after
   block L equals layer L.

A failure raises `SelfCheckError` naming the model, the check, the largest difference and what to do.
"""
from __future__ import annotations

import torch

from .base import LayerAdapter, eval_mode


class SelfCheckError(ValueError):
    """An adapter does not read its model exactly: the library refuses to return numbers for it."""


def _tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-9, torch.float32: 1e-4}.get(dtype, 3e-2)


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> tuple[bool, float]:
    if a.shape != b.shape:
        return False, float("inf")
    a, b = a.double(), b.double()
    scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    return diff <= _tolerance(dtype) * scale, diff


def _fail(adapter: LayerAdapter, check: str, detail: str) -> SelfCheckError:
    return SelfCheckError(
        f"{adapter.name} ({type(adapter).__name__}, {type(adapter.model).__name__}) fails the self-check '{check}': "
        f"{detail}. layersim refuses to read a model it cannot read exactly. The adapter assumed: "
        f"{adapter.readout_formula()}. If the model normalises or pools differently, write a LayerAdapter "
        "subclass that says so (README, 'Your own model'), or report the family; check=False skips this check "
        "(the numbers are then unchecked).")


def _block_outputs_by_hooks(adapter: LayerAdapter, batch) -> list | None:
    """Each block's output during the model's own forward (``logits``), or None where the blocks are unknown."""
    try:
        blocks = adapter.block_modules()
    except NotImplementedError:
        return None
    seen: list = []
    handles = [b.register_forward_hook(lambda m, a, out: seen.append(out[0] if isinstance(out, (tuple, list))
                                                                        else out)) for b in blocks]
    try:
        adapter.run_model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def check_adapter(adapter: LayerAdapter, batch=None) -> None:
    """Run the self-check on `batch` (default ``adapter.probe_batch()``); raise `SelfCheckError` on a failure."""
    params = list(adapter.model.parameters())
    if not params or any(p.is_meta for p in params):
        return  # nothing to run: a model without weights (meta device) gives no numbers to check
    batch = adapter.probe_batch() if batch is None else batch
    dtype = adapter.dtype
    L = adapter.num_layers
    with torch.no_grad(), eval_mode(adapter.model):
        hidden = adapter.hidden_states(batch)
        if hidden.states.shape[0] != L:
            raise _fail(adapter, "blocks", f"hidden_states gave {hidden.states.shape[0]} layers, the model has {L}")
        by_hooks = _block_outputs_by_hooks(adapter, batch)
        if by_hooks is not None:
            if len(by_hooks) != L:
                raise _fail(adapter, "blocks", f"the model's own forward ran its blocks {len(by_hooks)} times, not once "
                                               f"each of {L}")
            real = hidden.mask
            for l, own in enumerate(by_hooks, start=1):
                ok, diff = _close(hidden.states[l - 1][real], own[real], dtype)
                if not ok:
                    raise _fail(adapter, "blocks", f"layer {l} of hidden_states differs from the output of block {l} "
                                                   f"in the model's own forward by {diff:.3g}")
        for upto in range(1, L):
            part = adapter.hidden_states(batch, upto=upto).states
            ok, diff = (part.shape[0] == upto, 0.0)
            if ok:
                ok, diff = _close(part, hidden.states[:upto], dtype)
            if not ok:
                raise _fail(adapter, "truncated forward", f"hidden_states(upto={upto}) differs from layers 1..{upto} "
                                                          f"of the full forward ({diff:.3g}, shape {tuple(part.shape)})")
        if adapter.has_readout:
            own = adapter.logits(batch)
            if adapter.vocabulary_readout:
                own = own[adapter.sample_mask(hidden, "tokens")]
            read = adapter.reader(adapter.head_inputs(hidden, layers=[L])[0], L)
            ok, diff = _close(read, own, dtype)
            if not ok:
                raise _fail(adapter, "layer L is the model's prediction",
                            f"the last-layer classifier on layer {L} gives logits of shape {tuple(read.shape)} that "
                            f"differ from the model's own logits {tuple(own.shape)} by {diff:.3g}")
        else:
            pair = adapter.final_features(hidden, batch)
            ok, diff = _close(*pair, dtype) if pair is not None else (True, 0.0)
            if not ok:
                raise _fail(adapter, "layer L is the model's output",
                            f"layer {L} with the final norm (shape {tuple(pair[0].shape)}) differs from the features "
                            f"the model returns {tuple(pair[1].shape)} by {diff:.3g}")
        try:
            state = adapter.begin(batch)
        except NotImplementedError:
            return
        stepped = adapter.run_blocks(state, L).tokens
        ok, diff = _close(stepped[hidden.mask], hidden.states[-1][hidden.mask], dtype)
        if not ok:
            raise _fail(adapter, "block stepping", f"running the blocks one by one from begin() differs from the "
                                                   f"full forward at layer {L} by {diff:.3g}")
