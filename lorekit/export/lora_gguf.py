"""PEFT LoRA adapter -> llama.cpp GGUF LoRA adapter.

llama.cpp's adapter format (read by `llama_adapter_lora_init`): `general.type = "adapter"`,
`adapter.type = "lora"`, `adapter.lora.alpha`, and for each adapted weight `W` of the base GGUF two
tensors `<name>.lora_a` and `<name>.lora_b`. With GGUF's innermost-first shapes, A is `[in, r]` and
B is `[r, out]`, which in numpy order are exactly PEFT's `lora_A.weight (r, in)` and
`lora_B.weight (out, r)`. llama.cpp scales B @ A by alpha / r, r read from B.

Trained token rows (PEFT `trainable_token_indices`, used for the chat format's special tokens) are
not a LoRA: PEFT saves the rows' new *values* (it replaces those rows of `embed_tokens`, and of the
tied output layer, it does not add to them). They go into the merged model; llama.cpp cannot take
them as an adapter on Gemma's tied embedding (see `TOKEN_ROWS_NOT_IN_ADAPTER`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lorekit.errors import LorekitError

log = logging.getLogger(__name__)

# PEFT module path inside a decoder layer -> llama.cpp tensor name inside `blk.N.`
MODULE_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "per_layer_input_gate": "inp_gate",  # Gemma 4 per-layer embeddings
    "per_layer_projection": "proj",
}

TOKEN_EMBD = "token_embd.weight"
TOKEN_ROWS_NOT_IN_ADAPTER = (
    "adapter.gguf holds the LoRA only, without the trained token rows: llama.cpp applies a token_embd LoRA "
    "to the tied output layer too, where its shapes abort the process, and refuses an output.weight LoRA on "
    "a tied model; model.gguf has the rows, serve that one")

# base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta (Gemma 4: ...language_model...)
_TOKENS_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?(?:language_model\.)?(?:model\.)?(embed_tokens|lm_head)"
    r"\.token_adapter\.trainable_tokens_delta(?:\.default)?$")
# base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight, also under language_model (Gemma 4)
_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?:model\.)?(?:language_model\.)?(?:model\.)?layers\.(\d+)\.(.+)\.lora_([AB])(?:\.default)?\.weight$"
)


@dataclass
class TokenRows:
    """Trained rows of the token embedding: `values[i]` replaces row `indices[i]`."""

    indices: list[int]
    values: np.ndarray  # (len(indices), hidden) float32


@dataclass
class LoraAdapter:
    """A PEFT adapter, keyed by base GGUF tensor name: name -> (A (r, in), B (out, r), scale)."""

    path: Path
    base_model: str
    r: int
    alpha: float
    weights: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)
    token_rows: TokenRows | None = None

    @property
    def touched(self) -> set[str]:
        """Names of the base tensors this adapter changes."""
        return set(self.weights) | ({TOKEN_EMBD} if self.token_rows is not None else set())

    @property
    def n_layers(self) -> int:
        """1 + the highest layer index the adapter touches."""
        return 1 + max(int(n.split(".")[1]) for n in self.weights) if self.weights else 0

    def delta(self, name: str) -> np.ndarray:
        """scale * B @ A in float32, numpy order (out, in): what merging adds to the base weight."""
        a, b, scale = self.weights[name]
        return (b.astype(np.float32) @ a.astype(np.float32)) * np.float32(scale)

    def apply(self, name: str, weight: np.ndarray) -> np.ndarray:
        """The base tensor `weight` (float32, numpy order) as this adapter changes it."""
        if name in self.weights:
            weight = weight + self.delta(name)
        if name == TOKEN_EMBD and self.token_rows is not None:
            weight = np.array(weight, dtype=np.float32, copy=True)
            weight[self.token_rows.indices] = self.token_rows.values
        return weight


def read_adapter(adapter_dir: Path) -> LoraAdapter:
    """Read `adapter_config.json` + `adapter_model.safetensors` and map keys to GGUF names."""
    from safetensors.numpy import load_file

    adapter_dir = Path(adapter_dir)
    cfg_path, st_path = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not cfg_path.is_file() or not st_path.is_file():
        raise LorekitError(f"{adapter_dir}: no PEFT adapter (adapter_config.json + adapter_model.safetensors); "
                           "run `lorekit train` first")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    _check_supported(cfg, cfg_path)
    tensors = _load_f32(load_file(str(st_path)))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    token_values = None
    for key, value in tensors.items():
        t = _TOKENS_KEY.match(key)
        if t:
            if t.group(1) == "lm_head":
                raise LorekitError(f"{st_path}: trained token rows on lm_head (an untied output layer) cannot be "
                                   "exported; train them on embed_tokens (Gemma ties the two)")
            token_values = value
            continue
        m = _KEY.match(key)
        if not m:
            raise LorekitError(f"{st_path}: tensor {key!r} is not a LoRA weight of a decoder layer projection; "
                               "LoreKit exports adapters on the text decoder's linear layers only")
        layer, module, ab = m.groups()
        if module not in MODULE_TO_GGUF:
            raise LorekitError(f"{st_path}: LoRA on {module!r} (layer {layer}) cannot be exported; "
                               f"supported targets: {', '.join(sorted(MODULE_TO_GGUF))}")
        pairs.setdefault(f"blk.{layer}.{MODULE_TO_GGUF[module]}.weight", {})[ab] = value
        pairs[f"blk.{layer}.{MODULE_TO_GGUF[module]}.weight"]["module"] = module  # type: ignore[assignment]
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    adapter = LoraAdapter(adapter_dir, str(cfg.get("base_model_name_or_path") or ""), r, alpha)
    for name, ab in sorted(pairs.items()):
        if "A" not in ab or "B" not in ab:
            raise LorekitError(f"{st_path}: {name} has only lora_{'A' if 'A' in ab else 'B'}; the adapter is incomplete")
        a, b = ab["A"], ab["B"]
        if a.shape[0] != b.shape[1]:
            raise LorekitError(f"{st_path}: {name}: lora_A {a.shape} and lora_B {b.shape} disagree on the rank")
        adapter.weights[name] = (a, b, _scale(cfg, str(ab["module"]), a.shape[0]))
    if token_values is not None:
        adapter.token_rows = _token_rows(cfg, token_values, cfg_path)
    if not adapter.weights and adapter.token_rows is None:
        raise LorekitError(f"{st_path}: the adapter holds no LoRA weights")
    return adapter


def _token_rows(cfg: dict, values: np.ndarray, where: Path) -> TokenRows:
    spec = cfg.get("trainable_token_indices")
    indices = spec.get("embed_tokens") if isinstance(spec, dict) else spec
    if isinstance(spec, dict) and set(spec) - {"embed_tokens"}:
        raise LorekitError(f"{where}: trainable_token_indices on {sorted(set(spec) - {'embed_tokens'})} cannot be "
                           "exported; train token rows on embed_tokens only")
    if not isinstance(indices, list) or len(indices) != values.shape[0]:
        raise LorekitError(f"{where}: trainable_token_indices {spec!r} does not list the {values.shape[0]} trained "
                           "token rows the adapter holds; the adapter is incomplete")
    return TokenRows([int(i) for i in indices], values)


def _check_supported(cfg: dict, where: Path) -> None:
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise LorekitError(f"{where}: peft_type {cfg.get('peft_type')!r} is not LoRA; only LoRA adapters export")
    if cfg.get("use_dora"):
        raise LorekitError(f"{where}: DoRA adapters cannot be written for llama.cpp; train with use_dora=false")
    if cfg.get("modules_to_save"):
        raise LorekitError(f"{where}: modules_to_save {cfg['modules_to_save']} (fully trained layers) "
                           "cannot be exported as a LoRA; train LoRA on the projections only")


def _load_f32(tensors: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}


def _scale(cfg: dict, module: str, r: int) -> float:
    """PEFT's scaling for one module, honouring rank_pattern / alpha_pattern and rsLoRA."""
    alpha = float(cfg["lora_alpha"])
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():
        if re.search(pattern, module):
            alpha = float(value)
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def check_against_base(adapter: LoraAdapter, base_shapes: dict[str, tuple[int, ...]], n_layers: int,
                       base_name: str) -> None:
    """Raise a one-line error naming both files when the adapter does not fit the base GGUF."""
    where = f"adapter {adapter.path} vs base {base_name}"
    if adapter.n_layers > n_layers:
        raise LorekitError(f"{where}: the adapter has layers up to {adapter.n_layers - 1}, the base only "
                           f"{n_layers} layers; export onto the model the adapter was trained on")
    for name, (a, b, _) in adapter.weights.items():
        shape = base_shapes.get(name)
        if shape is None:
            raise LorekitError(f"{where}: the base has no tensor {name}; export onto the model the adapter "
                               "was trained on")
        if shape != (b.shape[0], a.shape[1]):
            raise LorekitError(f"{where}: {name} is {shape[0]}x{shape[1]} in the base but the LoRA is "
                               f"{b.shape[0]}x{a.shape[1]}; export onto the model the adapter was trained on")
    rows = adapter.token_rows
    if rows is not None:
        vocab, hidden = base_shapes.get(TOKEN_EMBD, (0, 0))
        if rows.values.shape[1] != hidden or max(rows.indices) >= vocab or min(rows.indices) < 0:
            raise LorekitError(f"{where}: trained token rows {rows.indices} of width {rows.values.shape[1]} do not "
                               f"fit the base's {vocab}x{hidden} token embedding; export onto the model the "
                               "adapter was trained on")


def write_adapter_gguf(adapter: LoraAdapter, arch: str, out: Path, name: str = "lorekit-adapter") -> None:
    """Write the adapter in llama.cpp's GGUF LoRA format (float32 tensors, exact)."""
    import gguf

    alphas = {round(scale * a.shape[0], 6) for a, _, scale in adapter.weights.values()}
    # One alpha serves every tensor when alpha/r is uniform; otherwise fold each scale into B
    # and write alpha 0, which llama.cpp reads as "scale 1".
    fold = len(alphas) != 1
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0 if fold else float(alphas.pop()))
    for tname, (a, b, scale) in adapter.weights.items():
        writer.add_tensor(tname + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
        b = b * np.float32(scale) if fold else b
        writer.add_tensor(tname + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
    _finish(writer)
    log.info("wrote %s: %d LoRA pairs, alpha %s", out, len(adapter.weights), "folded" if fold else adapter.alpha)


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
