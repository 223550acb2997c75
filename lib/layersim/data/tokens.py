"""The text pipeline of the language models: a byte-level BPE tokenizer trained on a corpus (cached), and
token ids packed into fixed-length sequences."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..storage import atomic_folder, atomic_write_json, clean_leftovers, default_cache_dir, load_or_build, stable_hash
from .text import TextCorpus
from ..validate import whole_number

# ----------------------------------------------------------------------------------------------
# Tokenizer and packed sequences for causal language models
END_OF_TEXT = "<|endoftext|>"
PADDING = "<|pad|>"


def _texts_digest(texts: Sequence[str]) -> str:
    """blake2b of a list of strings (each with its length, so that the boundaries count)."""
    digest = hashlib.blake2b(digest_size=16)
    for t in texts:
        b = t.encode("utf-8")
        digest.update(len(b).to_bytes(8, "little"))
        digest.update(b)
    return digest.hexdigest()


def _check_texts(texts, what: str) -> list:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{what} must be a list of strings (one document each), got {type(texts).__name__}")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{what}[{bad}] is a {type(texts[bad]).__name__}, expected a string")
    if not any(t.strip() for t in texts):
        raise ValueError(f"{what} is empty (no document with any text); pass the training split of a corpus")
    return list(texts)


def _train_byte_level_bpe(texts: list, vocab_size: int, min_frequency: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[END_OF_TEXT, PADDING], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=PADDING)


def train_bpe_tokenizer(texts, vocab_size: int = 2048, *, min_frequency: int = 2,
                        cache_dir: Optional[os.PathLike] = None, rebuild: bool = False):
    """A byte-level BPE tokenizer (GPT-2's scheme) trained on `texts` with Hugging Face `tokenizers`.

    `texts`: a list of documents, or a `TextCorpus` (its training split is used). The vocabulary holds
    at most `vocab_size` tokens: the special tokens ``<|endoftext|>`` (id 0; the end-of-text, bos and
    eos token) and ``<|pad|>`` (id 1; padding), the 256 byte symbols, then the merges learned from the
    text (fewer when a small text has no more pairs seen `min_frequency` times). Any text can be encoded
    (no unknown token) and decoding gives it back. No special token is added by encoding: join
    documents with `pack_tokens`.

    Training is deterministic. The result is cached under ``default_cache_dir()/tokenizers`` (or
    `cache_dir`), keyed by the texts' content, `vocab_size`, `min_frequency` and the `tokenizers`
    version, written atomically and rebuilt when damaged; ``rebuild=True`` trains it again.
    Returns a `transformers.PreTrainedTokenizerFast`.
    """
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    if isinstance(texts, TextCorpus):
        texts = texts.train
    texts = _check_texts(texts, "texts")
    whole_number(vocab_size, "vocab_size", low=258,
                 what="an integer of at least 258 (256 byte symbols and 2 special tokens)")
    whole_number(min_frequency, "min_frequency", low=1)
    spec = {"kind": "byte-level-bpe", "texts": _texts_digest(texts), "n_texts": len(texts),
            "vocab_size": int(vocab_size), "min_frequency": int(min_frequency),
            "special_tokens": [END_OF_TEXT, PADDING], "tokenizers": tokenizers.__version__, "format": 1}
    parent = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "tokenizers"
    folder = parent / f"bpe{int(vocab_size)}-{stable_hash(spec)[:20]}"

    def load(folder: Path):
        with open(folder / "layersim-tokenizer.json", encoding="utf-8") as f:
            if json.load(f).get("spec") != spec:
                raise ValueError("spec mismatch")
        tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
        if tok.eos_token != END_OF_TEXT or tok.pad_token != PADDING or len(tok) > vocab_size:
            raise ValueError("special tokens or vocabulary differ from the spec")
        return tok

    def build(folder: Path):
        start = time.perf_counter()
        tok = _train_byte_level_bpe(texts, int(vocab_size), int(min_frequency))
        seconds = time.perf_counter() - start
        with atomic_folder(folder) as tmp:
            tok.save_pretrained(str(tmp))
            atomic_write_json(tmp / "layersim-tokenizer.json",
                              {"spec": spec, "vocabulary": len(tok), "train_seconds": round(seconds, 3)})
        return load(folder)

    parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(parent)
    return load_or_build(folder, load, build, lock=parent / f".{folder.name}.lock", rebuild=rebuild,
                         what="tokenizer")


def pack_tokens(ids, seq_len: int, *, eos_id: Optional[int] = None) -> torch.Tensor:
    """Pack token ids into fixed-length sequences for causal language modelling.

    `ids`: either a list of documents, each a list (or 1-D tensor) of token ids, which are joined with
    `eos_id` (required; e.g. ``tokenizer.eos_token_id``) after every document, or one 1-D stream of
    ids already joined (a tensor or a flat list). The stream is cut into consecutive pieces of
    `seq_len` tokens; the remainder that does not fill a whole piece is dropped.

    Returns a (n_seqs, seq_len) LongTensor, n_seqs = total_tokens // seq_len. Raises ValueError when
    not even one sequence can be filled (an empty or too small split).
    """
    whole_number(seq_len, "seq_len", low=2, what="an integer of at least 2 (an input and its next token)")
    if isinstance(ids, torch.Tensor):
        if ids.ndim != 1:
            raise ValueError(f"ids as a tensor must be one stream of shape (n_tokens,), got shape {tuple(ids.shape)}; "
                             "pass a list of per-document tensors to join them with eos_id")
        stream = ids
        if stream.is_floating_point() or stream.is_complex() or stream.dtype == torch.bool:
            raise TypeError(f"token ids must be integers, got a {stream.dtype} tensor")
        stream = stream.long()
    else:
        ids = list(ids)
        nested = bool(ids) and not isinstance(ids[0], (int, np.integer))
        if nested:
            if eos_id is None:
                raise ValueError("ids is a list of documents: pass eos_id (e.g. tokenizer.eos_token_id) to "
                                 "join them, or pass one flat stream of ids")
            whole_number(eos_id, "eos_id", low=0)
            pieces = []
            for i, doc in enumerate(ids):
                t = doc if isinstance(doc, torch.Tensor) else torch.as_tensor(list(doc), dtype=torch.long)
                if t.ndim != 1 or t.is_floating_point() or t.dtype == torch.bool:
                    raise TypeError(f"document {i} of ids must be a flat sequence of integer ids, got "
                                    f"{t.dtype} of shape {tuple(t.shape)}")
                pieces += [t.long(), torch.tensor([int(eos_id)])]
            stream = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)
        else:
            if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in ids):
                raise TypeError("ids must be a flat list of integer ids or a list of documents (lists of ids)")
            stream = torch.tensor(ids, dtype=torch.long)
    if stream.numel() and int(stream.min()) < 0:
        raise ValueError(f"token ids must be non-negative, found {int(stream.min())}")
    n_seqs = stream.numel() // int(seq_len)
    if n_seqs == 0:
        raise ValueError(f"{stream.numel()} tokens cannot fill one sequence of {seq_len}: the text split is empty "
                         "or too small; use more text or a shorter seq_len")
    return stream[: n_seqs * int(seq_len)].reshape(n_seqs, int(seq_len)).clone()


def tokenize_and_pack(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """Encode documents with `tokenizer` (no special tokens) and pack them with `pack_tokens`, joined by the
    tokenizer's end-of-text token -> (n_seqs, seq_len) LongTensor."""
    texts = _check_texts(texts, "texts")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token to join documents with; set tokenizer.eos_token")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return pack_tokens(ids, seq_len, eos_id=tokenizer.eos_token_id)
