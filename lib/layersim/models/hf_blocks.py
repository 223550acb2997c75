"""Reading the blocks of a Hugging Face model: what every Hugging Face adapter shares (text encoders, causal LMs,
vision transformers, the encoder stacks of encoder-decoder models).

Where an adapter writes out what its family does before block 1 (``has_entry``, ``_entry``: GPT-2, the Llama
family, the BERT family; `layersim.models.families.BLOCK_ENTRY`), the blocks run in an explicit loop. Otherwise
the model's own forward runs them: a forward hook on each block records its output, and after block `upto` the
forward stops (a real truncated forward, whatever the family does between blocks: masks, rotary embeddings,
relative position biases); a forward pre-hook on block 1 records its input. Either way the embedding output
("layer 0", the input of block 1) comes from the same pass, and is kept as a copy taken before block 1 runs (a
block that changes its input in place would otherwise change layer 0 too).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import BlockState, Hidden, check_upto
from .decoder import run_block
from .families import find_blocks


class StopForward(Exception):
    """Raised by a block hook once the blocks asked for have run (or, in ``_block_entry``, at block 1's entry)."""


class HFBlocks:
    """Mixin for `LayerAdapter` subclasses over a Hugging Face model. ``_find_blocks(base)`` sets ``base`` (the
    module whose forward runs the blocks: the base model, or an encoder stack) and its blocks; ``call_kwargs``
    go to every call of ``base``; ``_model_inputs(batch)`` turns a batch into the keyword arguments of ``base``
    (``input_ids`` and ``attention_mask`` for text, ``pixel_values``, ``input_features``)."""

    call_kwargs: dict = {}
    num_prefix = 0  # leading non-content tokens (vision: class, distillation and register tokens)

    def _model_inputs(self, batch) -> dict:
        raise NotImplementedError

    @staticmethod
    def _mask(inputs: dict, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) bool, True at real tokens: the attention mask of a text batch, else every token."""
        mask = inputs.get("attention_mask")
        return mask.bool() if mask is not None else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def hidden_states(self, batch, upto: int | None = None) -> Hidden:
        inputs = self._model_inputs(batch)
        states, entry = self._block_outputs(inputs, check_upto(upto, self.num_layers))
        states = torch.stack(states)
        embedded = entry if entry is not None and entry.shape == states.shape[1:] else None
        return Hidden(states, self._mask(inputs, states[0]), input_ids=inputs.get("input_ids"),
                      num_prefix=self.num_prefix, embedded=embedded)

    def begin(self, batch) -> BlockState:
        """The inputs of block 1 and what every block takes: written out where the family's entry is (``_entry``),
        else recorded by a forward pre-hook on block 1 that stops the model's own forward there."""
        inputs = self._model_inputs(batch)
        if self.has_entry:
            tokens, kwargs = self._entry(inputs)
            rest = ()
        else:
            tokens, rest, kwargs = self._block_state_parts(*self._block_entry(inputs))
        return BlockState(tokens, 0, self._mask(inputs, tokens), torch.arange(tokens.shape[0], device=tokens.device),
                          input_ids=inputs.get("input_ids"), num_prefix=self.num_prefix, block_args=rest,
                          block_kwargs=kwargs)

    def final_features(self, hidden: Hidden, batch):
        """(the final norm on layer L, the model's own last_hidden_state), at real tokens (see the self-check)."""
        own = self.base(**self._model_inputs(batch), **self.call_kwargs).last_hidden_state
        return self.norm(hidden.states[-1])[hidden.mask], own[hidden.mask]

    def _find_blocks(self, base: nn.Module) -> None:
        self.base = base
        self.blocks_path, self._blocks = find_blocks(base)

    def blocks_at(self) -> str:
        """Where the blocks are, for `structure()`."""
        return f"{type(self.base).__name__}.{self.blocks_path}" if self.blocks_path else "not found"

    def blocks_run_by(self) -> str:
        """What runs the blocks, for `structure()`."""
        return "the model's own forward (hooks on the blocks)"

    def block_structure(self) -> dict:
        return {"blocks at": self.blocks_at(), "blocks run by": self.blocks_run_by()}

    # -- the explicit loop, where the family's entry is written out
    @property
    def has_entry(self) -> bool:
        return False

    def _entry(self, inputs: dict) -> tuple[torch.Tensor, dict]:
        """(block 1's input (B, T, d), the keyword arguments every block takes), made as the model's own forward
        makes them; only where ``has_entry``."""
        raise NotImplementedError

    def block_modules(self) -> list[nn.Module]:
        if self._blocks is None or len(self._blocks) != self.num_layers:
            raise NotImplementedError(f"{self.name}: could not find its {self.num_layers} blocks as one ModuleList "
                                      "(e.g. ALBERT shares one layer group): it cannot be run block by block")
        return list(self._blocks)

    def _block_outputs(self, inputs: dict, upto: int) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """(the raw outputs of blocks 1..upto, the input of block 1): by the explicit loop where the family's
        entry is written out, else by hooks on the blocks during the model's own forward of ``base(**inputs)``,
        which stops after block `upto`. Without a list of blocks (ALBERT), Hugging Face's hidden states (whose
        first entry is the embedding output)."""
        if self.has_entry:
            h, kwargs = self._entry(inputs)
            entry = h.clone()  # layer 0, before block 1 may change its input in place
            outputs = [h]
            for block in self._blocks[:upto]:
                outputs.append(run_block(block, outputs[-1], kwargs))
            return outputs[1:], entry
        if self._blocks is None:
            out = self.base(**inputs, output_hidden_states=True, **self.call_kwargs)
            return list(out.hidden_states[1:upto + 1]), out.hidden_states[0]
        outputs: list = []
        entry: list = []

        def record(index):
            def hook(module, args, output):
                if index != len(outputs):
                    raise RuntimeError(f"{self.name}: block {index + 1} ran after {len(outputs)} blocks; the "
                                       "blocks do not run once each in order")
                outputs.append(output[0] if isinstance(output, (tuple, list)) else output)
                if len(outputs) == upto and upto < self.num_layers:
                    raise StopForward
            return hook

        def record_entry(module, args, kwargs):  # a copy: block 1 may change its input in place
            tokens = args[0] if args else kwargs.get("hidden_states")
            entry.append(tokens.clone() if isinstance(tokens, torch.Tensor) else None)

        handles = [block.register_forward_hook(record(i)) for i, block in enumerate(self._blocks)]
        handles.append(self._blocks[0].register_forward_pre_hook(record_entry, with_kwargs=True))
        try:
            self.base(**inputs, **self.call_kwargs)
        except StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if len(outputs) != upto:
            raise RuntimeError(f"{self.name}: expected {upto} block outputs, the forward gave {len(outputs)}")
        return outputs, entry[0] if entry else None

    def _block_entry(self, inputs: dict) -> tuple[tuple, dict]:
        """(args, kwargs) of block 1's call in the model's own forward of ``base(**inputs)``: the base model runs
        up to the entry of block 1, where a forward pre-hook records them and stops the forward."""
        first = self.block_modules()[0]
        seen = {}

        def record(module, args, kwargs):
            seen["args"], seen["kwargs"] = args, dict(kwargs)
            raise StopForward

        handle = first.register_forward_pre_hook(record, with_kwargs=True)
        try:
            self.base(**inputs, **self.call_kwargs)
        except StopForward:
            pass
        finally:
            handle.remove()
        if "args" not in seen:
            raise ValueError(f"{self.name}: the forward pass never reached its first layer")
        return seen["args"], seen["kwargs"]

    @staticmethod
    def _block_state_parts(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple, dict]:
        """Block 1's recorded call -> (its input tokens, the other positional args, the keyword args)."""
        kwargs = dict(kwargs)
        return (args[0], tuple(args[1:]), kwargs) if args else (kwargs.pop("hidden_states"), (), kwargs)
