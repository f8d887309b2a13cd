"""A Hugging Face Gemma tokenizer as GGUF tokenizer metadata.

Gemma 3: llama.cpp's SentencePiece tokenizer (`tokenizer.ggml.model = "llama"`), from
`tokenizer.model` when the checkpoint has one (exact pieces and scores), else from `tokenizer.json`
(a byte-fallback BPE) with each merged piece scored by its merge rank, which makes SentencePiece's
"merge the best-scoring pair" pick the same pairs in the same order.
Gemma 4: llama.cpp's `gemma4` tokenizer, a BPE that reads the merges themselves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lorekit.errors import LorekitError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BYTE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
# Gemma 4 tool/channel markers llama.cpp keeps visible in its output (its converter does the same).
_GEMMA4_VISIBLE = {"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                   "<tool_response|>", '<|"|>'}


@dataclass
class Vocab:
    model: str  # "llama" | "gemma4"
    tokens: list[str]
    scores: list[float]
    types: list[int]
    merges: list[str] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)  # bos, eos, unk, pad
    chat_template: str | None = None

    def pad_to(self, n: int, where: Path) -> None:
        """Match the embedding's row count: extra rows become unused tokens."""
        if len(self.tokens) > n:
            raise LorekitError(f"{where}: the tokenizer has {len(self.tokens)} tokens but the embedding only "
                               f"{n} rows; tokenizer and weights do not belong together")
        for i in range(len(self.tokens), n):
            self.tokens.append(f"<unused_pad_{i}>")
            self.scores.append(-1000.0)
            self.types.append(UNUSED)

    def add_to(self, writer) -> None:
        writer.add_tokenizer_model(self.model)
        if self.model == "llama":
            writer.add_tokenizer_pre("default")
        writer.add_token_list(self.tokens)
        writer.add_token_scores(self.scores)
        writer.add_token_types(self.types)
        if self.merges:
            writer.add_token_merges(self.merges)
        for kind, token_id in self.special.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(False)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def read(hf_dir: Path, family: str) -> Vocab:
    hf_dir = Path(hf_dir)
    if family == "gemma3" and (hf_dir / "tokenizer.model").is_file():
        vocab = _from_sentencepiece(hf_dir)
    else:
        vocab = _from_tokenizer_json(hf_dir, family)
    vocab.special = _special_ids(hf_dir, vocab.tokens)
    vocab.chat_template = _chat_template(hf_dir)
    return vocab


def _from_sentencepiece(hf_dir: Path) -> Vocab:
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(hf_dir / "tokenizer.model"))
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        types.append(CONTROL if sp.is_control(i) else UNKNOWN if sp.is_unknown(i) else
                     UNUSED if sp.is_unused(i) else BYTE if sp.is_byte(i) else NORMAL)
    vocab = Vocab("llama", tokens, scores, types)
    tj = hf_dir / "tokenizer.json"
    if tj.is_file():  # added tokens past the SentencePiece model (e.g. chat markers)
        _apply_added(vocab, json.loads(tj.read_text(encoding="utf-8")).get("added_tokens", []), "gemma3")
    return vocab


def _from_tokenizer_json(hf_dir: Path, family: str) -> Vocab:
    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise LorekitError(f"{hf_dir}: no tokenizer.json or tokenizer.model; --from-hf needs the model's tokenizer")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise LorekitError(f"{path}: a {model.get('type')} tokenizer without byte fallback is not a Gemma tokenizer")
    size = 1 + max([*model["vocab"].values(), *(t["id"] for t in data.get("added_tokens", []))])
    tokens = [f"<unused_gap_{i}>" for i in range(size)]
    types = [UNUSED] * size
    for text, i in model["vocab"].items():
        tokens[i], types[i] = text, BYTE if _BYTE.match(text) else NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    scores = [0.0] * size
    ids = model["vocab"]
    for rank, merge in enumerate(merges):  # a piece made by an earlier merge scores higher
        a, _, b = merge.partition(" ")
        i = ids.get(a + b)
        if i is not None and scores[i] == 0.0:
            scores[i] = -float(rank + 1)
    vocab = Vocab("gemma4" if family == "gemma4" else "llama", tokens, scores, types,
                  merges if family == "gemma4" else [])
    _apply_added(vocab, data.get("added_tokens", []), family)
    return vocab


def _apply_added(vocab: Vocab, added: list[dict], family: str) -> None:
    for tok in added:
        i, text = tok["id"], tok["content"]
        while i >= len(vocab.tokens):
            vocab.tokens.append(f"<unused_gap_{len(vocab.tokens)}>")
            vocab.scores.append(-1000.0)
            vocab.types.append(UNUSED)
        vocab.tokens[i] = text
        if text == "<unk>":
            vocab.types[i] = UNKNOWN
        elif family == "gemma4" and text in _GEMMA4_VISIBLE or not tok.get("special"):
            vocab.types[i] = USER_DEFINED
        else:
            vocab.types[i] = CONTROL


def _special_ids(hf_dir: Path, tokens: list[str]) -> dict[str, int]:
    cfg_path = hf_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    index = {t: i for i, t in enumerate(tokens)}
    defaults = {"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"}
    out = {}
    for kind, default in defaults.items():
        value = cfg.get(f"{kind}_token") or default
        text = value.get("content") if isinstance(value, dict) else value
        if text in index:
            out[kind] = index[text]
    if "bos" not in out or "eos" not in out:
        raise LorekitError(f"{hf_dir}: the tokenizer has no bos/eos token (<bos>, <eos>); is it a Gemma tokenizer?")
    return out


def _chat_template(hf_dir: Path) -> str | None:
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg_path = hf_dir / "tokenizer_config.json"
    if cfg_path.is_file():
        template = json.loads(cfg_path.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None
