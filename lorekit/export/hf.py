"""Base model folder + LoRA (+ trained token rows) -> `export/hf/`: a merged bf16 Hugging Face model folder.

For vLLM, SGLang, transformers itself or further fine-tuning. Reads top to bottom: find the base's
Hugging Face folder -> map its tensors to the adapter's -> stream every tensor into bf16 shards, merging
the adapted ones on the way (`LoraAdapter.apply`, the same merge as model.gguf) -> tokenizer with the
chat template LoreKit trains with -> config.json and generation_config.json with the end-of-turn id.

Tensors the adapter leaves alone (Gemma 4's vision and audio towers included) are copied block by block,
byte for byte when the base is already bf16, so the folder stays the full model the base was. Memory:
one block of rows at a time, one whole tensor for the few the LoRA changes; never the model.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from lorekit import chat_formats
from lorekit.atomic import replace_dir, write_text
from lorekit.errors import LorekitError
from lorekit.export import safetensors_stream as st
from lorekit.export.lora_gguf import MODULE_TO_GGUF, TOKEN_EMBD, LoraAdapter, check_against_base

log = logging.getLogger(__name__)

SHARD_BYTES = 5 * 10**9  # the size Hugging Face folders are usually sharded at
# multimodal processors: copied so AutoProcessor still works on a Gemma 4 folder
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")

# model.layers.3.self_attn.q_proj.weight; Gemma 4 and Gemma 3 multimodal: model.language_model.layers...
_LAYER = re.compile(r"^(?:model\.)?(?:language_model\.)?(?:model\.)?layers\.(\d+)\.(.+)\.weight$")
_EMBED = re.compile(r"^(?:model\.)?(?:language_model\.)?(?:model\.)?embed_tokens\.weight$")
_LM_HEAD = re.compile(r"^(?:language_model\.)?lm_head\.weight$")


@dataclass
class HfExport:
    folder: Path
    source: Path
    shards: int
    tensors: int
    merged: list[str] = field(default_factory=list)  # the source tensors the adapter changed
    end_of_turn_id: int = -1


def source_dir(model: str, from_hf: str = "") -> Path:
    """The base model's Hugging Face folder: `from_hf` when given, else the trained model's own (the
    270M's cached conversion, a local folder, or a hub model already downloaded)."""
    if from_hf and from_hf != "model":
        path = Path(from_hf).expanduser()
        if not path.is_dir():
            raise LorekitError(f"--from-hf {from_hf}: not a folder; give the Hugging Face folder of the base model")
        return path.resolve()
    from lorekit.train.load import model_dir

    source, _ = model_dir(model)
    if Path(source).is_dir():
        return Path(source).resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source), local_files_only=True))
    except Exception as e:  # not in the local cache, and LoreKit never downloads at export time
        raise LorekitError(f"model {source!r} is not downloaded ({type(e).__name__}); run `hf download {source}` "
                           "or give its folder with --from-hf DIR") from None


def write(dest: Path, source: Path, adapter: LoraAdapter, family: str, tokenizer_dir: Path | None = None,
          max_shard_bytes: int = SHARD_BYTES) -> HfExport:
    """Write the merged folder to `dest` atomically: an error leaves any previous `dest` as it was."""
    config = read_config(source)
    tensors = st.read_folder(source)
    targets = _targets(tensors, adapter, source, _tied(config))
    groups = st.shards(tensors, max_shard_bytes)
    names = st.shard_names(len(groups))
    with replace_dir(dest) as tmp:
        for name, group in zip(names, groups, strict=True):
            st.write_file(tmp / name, group, lambda t: _data(t, targets.get(t.name), adapter))
            log.info("wrote %s (%d tensors)", name, len(group))
        if len(groups) > 1:
            weight_map = {t.name: name for name, group in zip(names, groups, strict=True) for t in group}
            index = {"metadata": {"total_size": sum(t.out_bytes for t in tensors)}, "weight_map": weight_map}
            write_text(tmp / "model.safetensors.index.json", json.dumps(index, indent=2) + "\n")
        eot = write_tokenizer(tmp, tokenizer_dir, source, family)
        write_configs(tmp, source, config, eot)
    return HfExport(dest, source, len(groups), len(tensors), sorted(targets), eot)


def read_config(source: Path) -> dict:
    path = source / "config.json"
    if not path.is_file():
        raise LorekitError(f"{path}: missing; the base folder needs the config.json of a Gemma model")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("quantization_config"):
        raise LorekitError(f"{path}: the base is quantized ({config['quantization_config'].get('quant_method')}); "
                           "merge onto the 16-bit model instead: --from-hf DIR with its bf16 folder")
    return config


def _tied(config: dict) -> bool:
    return bool(config.get("tie_word_embeddings", config.get("text_config", {}).get("tie_word_embeddings", True)))


def _targets(tensors: list[st.Tensor], adapter: LoraAdapter, source: Path, tied: bool) -> dict[str, str]:
    """Source tensor name -> the adapter's name for it (GGUF style), for the tensors the adapter changes;
    refuses an adapter that does not fit, in one line naming both folders."""
    keys: dict[str, str] = {}
    for t in tensors:
        m = _LAYER.match(t.name)
        if m and m.group(2) in MODULE_TO_GGUF:
            keys[t.name] = f"blk.{m.group(1)}.{MODULE_TO_GGUF[m.group(2)]}.weight"
        elif _EMBED.match(t.name) or (tied and _LM_HEAD.match(t.name)):
            keys[t.name] = TOKEN_EMBD
    shapes = {key: t.shape for t in reversed(tensors) if (key := keys.get(t.name))}  # the embedding wins
    layers = [int(k.split(".")[1]) for k in shapes if k.startswith("blk.")]
    check_against_base(adapter, shapes, 1 + max(layers, default=-1), str(source))
    return {name: key for name, key in keys.items() if key in adapter.touched}


def _data(t: st.Tensor, key: str | None, adapter: LoraAdapter):
    """The bytes of one output tensor: merged, with trained rows, or the source's in bf16."""
    import torch

    if key is not None and key in adapter.weights:
        merged = adapter.apply(key, st.read_tensor(t).float().numpy())  # the GGUF merge's own sum, in float32
        yield st.to_bytes(torch.from_numpy(merged).to(st.torch_dtype(t.out_dtype)))
        return
    rows = adapter.token_rows if key == TOKEN_EMBD else None
    for a, b, raw in st.blocks(t):
        here = [(i, v) for i, v in zip(rows.indices, rows.values, strict=True) if a <= i < b] if rows else []
        if t.dtype == t.out_dtype and not here:
            yield raw  # untouched and already bf16: the base's own bytes
            continue
        x = st.from_bytes(raw, t.dtype).reshape(b - a, -1).to(st.torch_dtype(t.out_dtype))
        for i, values in here:  # PEFT saved the rows' new values: they replace the base's rows
            x[i - a] = torch.from_numpy(values).to(x.dtype)
        yield st.to_bytes(x)


def write_tokenizer(folder: Path, tokenizer_dir: Path | None, source: Path, family: str) -> int:
    """The tokenizer training used (saved with the adapter; else the base's), with LoreKit's chat template.
    Returns the end-of-turn token id."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise LorekitError("the Hugging Face export needs transformers: pip install 'lorekit[train]'") from None
    from lorekit.train.template import chat_template

    fmt = chat_formats.get(family)
    has_own = tokenizer_dir is not None and (Path(tokenizer_dir) / "tokenizer_config.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir if has_own else source))
    tok = getattr(tok, "tokenizer", tok)
    tok.chat_template = chat_template(fmt)
    tok.save_pretrained(str(folder))
    # transformers 5 saves the template as chat_template.jinja; older readers look in tokenizer_config.json
    path = folder / "tokenizer_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["chat_template"] = tok.chat_template
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    ids = tok(fmt.end_of_turn, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise LorekitError(f"{tokenizer_dir if has_own else source}: the tokenizer splits {fmt.end_of_turn} into "
                           f"{len(ids)} pieces, so no runtime could stop at it; export the model training used")
    return int(ids[0])


def write_configs(folder: Path, source: Path, config: dict, end_of_turn: int) -> None:
    """config.json (bf16), generation_config.json (stops at the end of turn), the processor's files."""
    config = json.loads(json.dumps(config))
    for part in [config, *(v for k, v in config.items() if k.endswith("_config") and isinstance(v, dict))]:
        for key in ("dtype", "torch_dtype"):  # whichever the base's transformers wrote
            if key in part:
                part[key] = "bfloat16"
    if "torch_dtype" not in config:
        config["dtype"] = "bfloat16"
    write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
    write_text(folder / "generation_config.json", json.dumps(generation_config(source, config, end_of_turn),
                                                              indent=2) + "\n")
    template = (folder / "chat_template.jinja").read_text(encoding="utf-8") \
        if (folder / "chat_template.jinja").is_file() else None
    for name in PROCESSOR_FILES:
        if (source / name).is_file():
            data = json.loads((source / name).read_text(encoding="utf-8"))
            if "chat_template" in data and template is not None:
                data["chat_template"] = template  # the processor's own template would win in vLLM
            write_text(folder / name, json.dumps(data, indent=2) + "\n")


def generation_config(source: Path, config: dict, end_of_turn: int) -> dict:
    """The base's generation settings, with the end-of-turn token among the end ids (vLLM, transformers
    and SGLang stop at every id listed)."""
    path = source / "generation_config.json"
    gen = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    text = config.get("text_config", {})
    eos = gen.get("eos_token_id", config.get("eos_token_id", text.get("eos_token_id")))
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    gen["eos_token_id"] = [*eos, end_of_turn] if end_of_turn not in eos else eos
    for key in ("bos_token_id", "pad_token_id"):
        value = config.get(key, text.get(key))
        if key not in gen and value is not None:
            gen[key] = value
    return gen
