"""A GGUF's SentencePiece vocabulary as a transformers tokenizer that gives llama.cpp's token ids.

transformers can build a tokenizer from a GGUF itself, but how it does so has changed between
releases: 5.17 read the 270M's vocabulary as a Unigram model (1.8x llama.cpp's token count), and the
folder it saved reloads as a BPE without merges, one token per character (4.1x, rows cut at 1,024).
The model runs under llama.cpp, so LoreKit builds the tokenizer from the file's metadata itself.

llama.cpp's SentencePiece tokenizer first cuts out every user-defined token (and, with special
parsing, every control token) found in the raw text; the rest, spaces written as "▁", starts as single
characters and keeps merging the adjacent pair whose concatenation is a token with the best score;
a character without a token becomes its UTF-8 byte tokens. A byte-fallback BPE whose merges are every
two-token split of every token, ranked by that token's score, does the same, and the cut-out tokens
are added tokens. Its shape is the one transformers' `GemmaTokenizer` rebuilds on reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lorekit.errors import LorekitError

NORMAL, CONTROL, USER_DEFINED = 1, 3, 4  # llama.cpp token types
SPACE = "\u2581"
# Texts whose ids a converted tokenizer must reproduce: chat turns, runs of newlines, spaces and tabs,
# tags the vocabulary keeps whole, and characters that need byte fallback.
PROBES = (
    "<bos><start_of_turn>user\nWho leads the Ash Guild?  Tell me.<end_of_turn>\n<start_of_turn>model\n"
    "Mara Vell leads it.<end_of_turn>\n",
    "A line\n\n\tthen   three spaces, <b>bold</b> and <s>struck</s>; naïve café — 10,000 coins 🙂 \U0001d54f\u0c80",
    " leading space, trailing space \n",
)


@dataclass
class GgufVocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]
    special: dict[str, str]  # bos/eos/unk/pad -> token text
    add_bos: bool


def read(path: Path) -> GgufVocab:
    """The tokenizer metadata of a GGUF; refuses vocabularies this module does not reproduce."""
    from lorekit.gguf_reader import open_gguf

    fields = open_gguf(path).fields

    def get(key, default=None):
        return fields[key].contents() if key in fields else default

    model, prefix = get("tokenizer.ggml.model"), get("tokenizer.ggml.add_space_prefix", True)
    if model != "llama" or prefix:
        raise LorekitError(f"{path}: tokenizer {model!r} (add_space_prefix={prefix}) is not a Gemma-style "
                           "SentencePiece vocabulary; LoreKit converts only those from a GGUF")
    tokens = get("tokenizer.ggml.tokens")
    special = {name: tokens[get(f"tokenizer.ggml.{key}_token_id")]
               for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
               if get(f"tokenizer.ggml.{key}_token_id") is not None}
    return GgufVocab(tokens, get("tokenizer.ggml.scores"), get("tokenizer.ggml.token_type"), special,
                     bool(get("tokenizer.ggml.add_bos_token", True)))


def merges(vocab: GgufVocab) -> list[tuple[str, str]]:
    """Every split of a normal token into two normal tokens, the best-scoring result first."""
    normal = {t: i for i, t in enumerate(vocab.tokens) if vocab.types[i] == NORMAL}
    found = []
    for text, i in normal.items():
        for k in range(1, len(text)):
            left, right = text[:k], text[k:]
            if left in normal and right in normal:
                found.append((-vocab.scores[i], i, normal[left], left, right))
    found.sort()
    return [(left, right) for *_, left, right in found]


def backend(vocab: GgufVocab):
    """The `tokenizers.Tokenizer`: byte-fallback BPE, spaces as "▁", no other pre-splitting."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    ids = {t: i for i, t in enumerate(vocab.tokens)}
    if len(ids) != len(vocab.tokens):
        raise LorekitError("the GGUF's vocabulary lists a token twice; it cannot be converted")
    tok = Tokenizer(BPE(vocab=ids, merges=merges(vocab), unk_token=vocab.special.get("unk", "<unk>"),
                        fuse_unk=True, byte_fallback=True, dropout=None))
    tok.normalizer = normalizers.Replace(" ", SPACE)
    # GemmaTokenizer's own pre-tokenizer: it finds no spaces after the normalizer, so it splits nothing.
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    whole = [(t, kind) for t, kind in zip(vocab.tokens, vocab.types, strict=True) if kind in (CONTROL, USER_DEFINED)]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, kind in whole if kind == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, kind in whole if kind == USER_DEFINED])
    return tok


def load(path: Path):
    """A transformers fast tokenizer for the GGUF at `path`."""
    from transformers import PreTrainedTokenizerFast

    vocab = read(path)
    names = {f"{name}_token": text for name, text in vocab.special.items()}
    return PreTrainedTokenizerFast(tokenizer_object=backend(vocab), add_bos_token=vocab.add_bos,
                                   add_eos_token=False, **names)


def check_saved(folder: Path, reference, where: Path) -> None:
    """Refuse a saved tokenizer that does not give `reference`'s ids on the probes, reloaded both ways
    LoreKit reads it: transformers' AutoTokenizer (training) and the bare tokenizer.json (speed.py)."""
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    want = [reference(p, add_special_tokens=False)["input_ids"] for p in PROBES]
    auto = AutoTokenizer.from_pretrained(str(folder))
    bare = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    got = {"AutoTokenizer": [auto(p, add_special_tokens=False)["input_ids"] for p in PROBES],
           "tokenizer.json": [e.ids for e in bare.encode_batch(list(PROBES), add_special_tokens=False)]}
    for how, ids in got.items():
        if ids != want:
            raise LorekitError(
                f"{where}: the tokenizer converted for training reloads differently through {how} under "
                f"transformers {transformers.__version__} ({sum(map(len, ids))} tokens on the probe texts, "
                f"{sum(map(len, want))} expected); report this, or try another transformers version")
