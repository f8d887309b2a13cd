"""Hugging Face safetensors -> base GGUF for the Gemma 3 and Gemma 4 text decoders (`--from-hf`).

Written from llama.cpp's loader expectations (`src/models/gemma3.cpp`, `gemma4.cpp`) and the
`gguf` package's names (`gguf.TENSOR_NAMES`, `gguf.Keys`), so the kit never needs a llama.cpp
checkout. Vision and audio towers are left out. Conventions that differ from the checkpoint:
- Gemma 3 RMSNorm multiplies by (1 + w); llama.cpp multiplies by w, so Gemma 3 norms are stored +1.
  Gemma 4 norms multiply by w and are stored as they are.
- Gemma 4 full-attention layers use "proportional" RoPE on a fraction of each head; llama.cpp
  expresses that with a `rope_freqs` tensor whose unrotated dimensions get a huge divisor.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from lorekit.errors import LorekitError
from lorekit.export import hf_vocab
from lorekit.export.gguf_util import TensorOut, encode, writable, write_streaming

log = logging.getLogger(__name__)

# checkpoint name inside a decoder layer -> llama.cpp name inside `blk.N.`
LAYER_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    # Gemma 4
    "layer_scalar": "layer_output_scale.weight",
    "per_layer_input_gate.weight": "inp_gate.weight",
    "per_layer_projection.weight": "proj.weight",
    "post_per_layer_input_norm.weight": "post_norm.weight",
}
GLOBAL_NAMES = {
    "embed_tokens.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "embed_tokens_per_layer.weight": "per_layer_token_embd.weight",
    "per_layer_model_projection.weight": "per_layer_model_proj.weight",
    "per_layer_projection_norm.weight": "per_layer_proj_norm.weight",
}
_PREFIX = re.compile(r"^(?:model\.language_model\.|model\.|language_model\.model\.|language_model\.)")
_SKIP = re.compile(r"^(?:model\.)?(?:vision_tower|audio_tower|embed_vision|embed_audio|multi_modal_projector)\.")


def text_config(hf_dir: Path) -> dict[str, Any]:
    """The text decoder's config (`text_config` of a multimodal checkpoint), with `model_type`."""
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise LorekitError(f"{path}: missing; --from-hf needs a Hugging Face model folder (config.json + *.safetensors)")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    text = dict(cfg.get("text_config") or cfg)
    text.setdefault("tie_word_embeddings", cfg.get("tie_word_embeddings", True))
    try:  # transformers fills in what a checkpoint's config.json leaves at the defaults
        from transformers import AutoConfig

        full = AutoConfig.from_pretrained(str(hf_dir)).get_text_config().to_dict()
        return {**full, **{k: v for k, v in text.items() if k not in full}}
    except Exception as err:  # an unknown model_type or no transformers: the raw file is all we have
        log.debug("reading %s without transformers (%s)", path, err)
        return text


def family_of(cfg: dict[str, Any], where: Path) -> str:
    model_type = str(cfg.get("model_type", ""))
    if model_type.startswith("gemma4"):
        return "gemma4"
    if model_type.startswith("gemma3") and not model_type.startswith("gemma3n"):
        return "gemma3"
    raise LorekitError(f"{where}/config.json: model_type {model_type!r} is not supported by --from-hf "
                       "(Gemma 3 and Gemma 4 text decoders only)")


def convert(hf_dir: Path, out: Path, dtype: str = "f16") -> Path:
    """Write `out` (a base GGUF) from the checkpoint in `hf_dir`. `dtype`: f32 | f16 | q8_0."""
    hf_dir = Path(hf_dir)
    cfg = text_config(hf_dir)
    family = family_of(cfg, hf_dir)
    _check_supported(cfg, family, hf_dir)
    weights = _Weights(hf_dir)
    vocab = hf_vocab.read(hf_dir, family)
    n_vocab = _rows(weights, "embed_tokens.weight")
    vocab.pad_to(n_vocab, hf_dir)
    plan = _plan(weights, cfg, family, dtype)

    def metadata(writer) -> None:
        writer.add_type("model")
        writer.add_name(hf_dir.name)
        writer.add_file_type({"f32": 0, "f16": 1, "q8_0": 7}[dtype])
        (_gemma4_metadata if family == "gemma4" else _gemma3_metadata)(writer, cfg)
        vocab.add_to(writer)

    write_streaming(out, family, metadata, plan)
    log.info("wrote %s from %s (%s, %d tensors)", out, hf_dir, family, len(plan))
    return out


def _check_supported(cfg: dict, family: str, where: Path) -> None:
    what = f"{where}/config.json"
    if family == "gemma3":
        head_dim, scalar = cfg.get("head_dim", 256), cfg.get("query_pre_attn_scalar", cfg.get("head_dim", 256))
        if scalar not in (head_dim, cfg["hidden_size"] / cfg["num_attention_heads"]):
            raise LorekitError(f"{what}: query_pre_attn_scalar {scalar} is neither head_dim nor hidden/heads; "
                               "llama.cpp cannot express this Gemma 3 variant")
        if cfg.get("attn_logit_softcapping"):
            raise LorekitError(f"{what}: attn_logit_softcapping is set; llama.cpp's gemma3 has no attention softcap")
    else:
        if cfg.get("enable_moe_block"):
            raise LorekitError(f"{what}: Gemma 4 mixture-of-experts (26B-A4B) is not supported by --from-hf; "
                               "use a GGUF made by llama.cpp's converter with --base-gguf")
        if cfg.get("vocab_size_per_layer_input", cfg["vocab_size"]) != cfg["vocab_size"] and \
                cfg.get("hidden_size_per_layer_input"):
            raise LorekitError(f"{what}: vocab_size_per_layer_input differs from vocab_size; llama.cpp needs them equal")


class _Weights:
    """Checkpoint tensors by their name inside the text decoder, loaded one at a time."""

    def __init__(self, hf_dir: Path):
        from safetensors import safe_open

        files = sorted(hf_dir.glob("*.safetensors"))
        if not files:
            raise LorekitError(f"{hf_dir}: no *.safetensors weights; --from-hf needs the model's safetensors files")
        self.where: dict[str, tuple[Any, str]] = {}
        for f in files:
            handle = safe_open(str(f), framework="pt")
            for key in handle.keys():
                local = _PREFIX.sub("", key)
                if _SKIP.match(local):
                    continue
                self.where[local] = (handle, key)

    def has(self, name: str) -> bool:
        return name in self.where

    def shape(self, name: str) -> tuple[int, ...]:
        handle, key = self.where[name]
        return tuple(handle.get_slice(key).get_shape())

    def array(self, name: str) -> np.ndarray:
        handle, key = self.where[name]
        return handle.get_tensor(key).float().numpy()


def _rows(weights: _Weights, name: str) -> int:
    if not weights.has(name):
        raise LorekitError(f"checkpoint has no {name}; is it a Gemma text model?")
    return weights.shape(name)[0]


def _plan(weights: _Weights, cfg: dict, family: str, dtype: str) -> list[TensorOut]:
    import gguf

    T = gguf.GGMLQuantizationType
    big = {"f32": T.F32, "f16": T.F16, "q8_0": T.Q8_0}[dtype]
    shift = 1.0 if family == "gemma3" else 0.0
    plan: list[TensorOut] = []
    unknown = []
    for local in weights.where:
        target = _gguf_name(local, cfg)
        if target is None:
            unknown.append(local)
            continue
        shape = weights.shape(local)
        is_norm = target.endswith("norm.weight")
        qtype = T.F32 if len(shape) < 2 else big if writable(big, shape) else T.F16

        def make(local=local, qtype=qtype, add=shift if is_norm else 0.0) -> np.ndarray:
            return encode(weights.array(local) + np.float32(add), qtype)

        plan.append(TensorOut(target, shape, qtype, make))
    if unknown:
        raise LorekitError(f"checkpoint tensors not understood by --from-hf: {', '.join(unknown[:5])}"
                           f"{' ...' if len(unknown) > 5 else ''} (Gemma 3 / Gemma 4 text decoders only)")
    if family == "gemma4":
        plan.append(_rope_freqs(cfg))
    return plan


def _gguf_name(local: str, cfg: dict) -> str | None:
    if local == "lm_head.weight":
        return None if cfg.get("tie_word_embeddings", True) else "output.weight"
    if local in GLOBAL_NAMES:
        return GLOBAL_NAMES[local]
    m = re.match(r"^layers\.(\d+)\.(.+)$", local)
    if m and m.group(2) in LAYER_NAMES:
        return f"blk.{m.group(1)}.{LAYER_NAMES[m.group(2)]}"
    return None


def _rope_params(cfg: dict, kind: str) -> dict:
    params = cfg.get("rope_parameters") or {}
    if kind in params:
        return params[kind]
    if kind == "sliding_attention":
        return {"rope_theta": cfg.get("rope_local_base_freq", 10_000.0)}
    return params or {"rope_theta": cfg.get("rope_theta", 1_000_000.0)}


def _common_metadata(writer, cfg: dict) -> None:
    writer.add_context_length(int(cfg.get("max_position_embeddings", 131072)))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_block_count(int(cfg["num_hidden_layers"]))
    writer.add_head_count(int(cfg["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(float(_rope_params(cfg, "full_attention").get("rope_theta", 1_000_000.0)))
    writer.add_rope_freq_base_swa(float(_rope_params(cfg, "sliding_attention").get("rope_theta", 10_000.0)))
    writer.add_sliding_window(int(cfg.get("sliding_window") or 0))
    if cfg.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))


def _gemma3_metadata(writer, cfg: dict) -> None:
    import gguf

    _common_metadata(writer, cfg)
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_head_count_kv(int(cfg.get("num_key_value_heads", 1)))
    head_dim = int(cfg.get("head_dim", 256))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    layer_types = cfg.get("layer_types")
    if layer_types:  # llama.cpp defaults to 5 sliding : 1 full; write the real pattern
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
    full = _rope_params(cfg, "full_attention")
    if full.get("rope_type") == "linear" and full.get("factor"):
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(full["factor"]))


def _head_dim_full(cfg: dict) -> int:
    if cfg.get("global_head_dim"):
        return int(cfg["global_head_dim"])
    for idx, layer in (cfg.get("per_layer_config") or {}).items():
        if cfg["layer_types"][int(idx)] == "full_attention" and "head_dim" in layer:
            return int(layer["head_dim"])
    return int(cfg.get("head_dim", 256))


def _kv_heads_full(cfg: dict) -> int:
    if cfg.get("num_global_key_value_heads"):
        return int(cfg["num_global_key_value_heads"])
    for idx, layer in (cfg.get("per_layer_config") or {}).items():
        if cfg["layer_types"][int(idx)] == "full_attention" and "num_key_value_heads" in layer:
            return int(layer["num_key_value_heads"])
    return int(cfg.get("num_key_value_heads", 1))


def _gemma4_metadata(writer, cfg: dict) -> None:
    _common_metadata(writer, cfg)
    n_layer, layer_types = int(cfg["num_hidden_layers"]), list(cfg["layer_types"])
    swa = [t == "sliding_attention" for t in layer_types]
    shared = int(cfg.get("num_kv_shared_layers") or 0)
    _check_kv_sharing(swa, shared)
    n_ff = int(cfg["intermediate_size"])
    if cfg.get("use_double_wide_mlp"):
        writer.add_feed_forward_length([n_ff if i < n_layer - shared else 2 * n_ff for i in range(n_layer)])
    else:
        writer.add_feed_forward_length(n_ff)
    kv_swa, kv_full = int(cfg.get("num_key_value_heads", 1)), _kv_heads_full(cfg)
    writer.add_head_count_kv([kv_swa if s else kv_full for s in swa])
    head_swa, head_full = int(cfg.get("head_dim", 256)), _head_dim_full(cfg)
    writer.add_key_length(head_full)
    writer.add_value_length(head_full)
    writer.add_key_length_swa(head_swa)
    writer.add_value_length_swa(head_swa)
    writer.add_rope_dimension_count(head_full)  # the partial rotation lives in rope_freqs
    partial_swa = float(_rope_params(cfg, "sliding_attention").get("partial_rotary_factor", 1.0))
    writer.add_rope_dimension_count_swa(int(head_swa * partial_swa))
    writer.add_sliding_window_pattern(swa)
    writer.add_shared_kv_layers(shared)
    writer.add_embedding_length_per_layer_input(int(cfg.get("hidden_size_per_layer_input") or 0))


def _check_kv_sharing(swa: list[bool], shared: int) -> None:
    """llama.cpp reuses the cache of the last unshared layer of each kind: it must sit at the end."""
    first = len(swa) - shared
    if not shared:
        return
    swa_ok = not any(swa[first:]) or (first >= 2 and swa[first - 2] and not swa[first - 1])
    full_ok = all(swa[first:]) or (first >= 1 and not swa[first - 1])
    if not (swa_ok and full_ok):
        raise LorekitError(f"Gemma 4 KV sharing with layer kinds {swa[:first]} before the shared layers is not "
                           "a layout llama.cpp supports (it needs ... sliding, full, then the shared layers)")


def _rope_freqs(cfg: dict) -> TensorOut:
    import gguf

    full = _rope_params(cfg, "full_attention")
    head_full = _head_dim_full(cfg)
    factor = float(full.get("partial_rotary_factor", 1.0)) if full.get("rope_type") == "proportional" else 1.0
    n_rot = int(head_full * factor / 2)
    values = np.array([1.0] * n_rot + [1e30] * (head_full // 2 - n_rot), dtype=np.float32)
    return TensorOut("rope_freqs.weight", values.shape, gguf.GGMLQuantizationType.F32, lambda: values)
