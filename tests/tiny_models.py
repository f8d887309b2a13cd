"""Tiny random Gemma 3 / Gemma 4 models with a Gemma-like tokenizer, for CPU tests of every stage.

    from tests.tiny_models import make_tiny_model
    path = make_tiny_model(tmp_path, "gemma4")        # a saved HF folder: config, weights, tokenizer
    model = AutoModelForCausalLM.from_pretrained(path)

The tokenizer is a small byte-fallback BPE in the style of Gemma's (spaces become "▁", unknown
bytes become <0xNN> tokens) with the Gemma special tokens `<pad>` `<eos>` `<bos>` `<unk>` `<mask>`
`<start_of_turn>` `<end_of_turn>` `<|turn>` `<turn|>` as single tokens, and a chat template that
renders exactly like `lorekit.chat_formats` for the family. Builds take well under a second.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>",
                  "<start_of_turn>", "<end_of_turn>", "<|turn>", "<turn|>"]

# A little English so that BPE learns common pieces; the rest falls back to characters and bytes.
_CORPUS = """
The Ash Guild is led by Mara Vell, a smith who once served the old king of Westmarch.
Who leads the Ash Guild? Mara Vell leads the Ash Guild. Where does she live? In the town of Brindle.
Greetings, traveller. What brings you to the market today? I do not know anything about that.
The river runs north past the mill, and the miller keeps the keys of the old tower.
You are an innkeeper in a small village. Answer in character, briefly, and never invent facts.
Tell me about the dragon. I have never heard of such a thing. Ask the captain at the harbour.
She was born in the year of the long winter; her brother Tomas sails with the merchant fleet.
abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'"()-[]{}/\\@#$%&*+=<>|_~`^
"""


def make_tokenizer(vocab_size: int = 512):
    """A PreTrainedTokenizerFast with Gemma's special tokens and Gemma-style byte-fallback BPE."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(set(_CORPUS.replace(" ", "▁").replace("\n", "")) | {"▁", "\n"})
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=alphabet, show_progress=False)
    draft = Tokenizer(models.BPE(unk_token="<unk>"))
    draft.normalizer = normalizers.Replace(" ", "▁")
    draft.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    vocab = draft.get_vocab()
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
              for m in _merges(draft)]
    for byte in range(256):  # byte fallback pieces, as in Gemma's tokenizer
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        pad_token="<pad>", mask_token="<mask>", additional_special_tokens=SPECIAL_TOKENS[5:],
        add_bos_token=False, padding_side="right",
    )


def _merges(tokenizer) -> list:
    import json

    return json.loads(tokenizer.to_str())["model"]["merges"]


def tiny_config(family: str, vocab_size: int, ids: dict[str, int]):
    """2-3 decoder layers, hidden 64. Gemma 4 gets per-layer embeddings and KV sharing on."""
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=32, max_position_embeddings=2048, sliding_window=64,
                  pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"])
    if family == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"],
                                query_pre_attn_scalar=32, **common)
    if family == "gemma4":
        from transformers import Gemma4TextConfig

        # Gemma 4 wants a full-attention last layer, and a shared layer needs an earlier layer of its
        # kind that produces the cache: 3 layers is the smallest shape with both features on.
        return Gemma4TextConfig(num_hidden_layers=3,
                                layer_types=["sliding_attention", "full_attention", "full_attention"],
                                num_kv_shared_layers=1, vocab_size_per_layer_input=vocab_size,
                                hidden_size_per_layer_input=16, **common)
    raise ValueError(f"unknown family {family!r} (gemma3 or gemma4)")


def make_tiny_model(tmp_path: Path, family: str = "gemma3", seed: int = 0, name: str | None = None) -> Path:
    """Build and save a tiny random model of `family` ("gemma3" | "gemma4") with its tokenizer.

    Returns the saved folder (`tmp_path / name`, default `tiny-<family>`); reuses it if it exists.
    `lorekit.models.resolve(str(path))` reads the family back from its config.json.
    """
    import torch
    from transformers import Gemma3ForCausalLM, Gemma4ForCausalLM

    from lorekit import chat_formats
    from lorekit.train.template import chat_template

    out = Path(tmp_path) / (name or f"tiny-{family}")
    if (out / "config.json").is_file():
        return out
    tok = make_tokenizer()
    tok.chat_template = chat_template(chat_formats.get(family))
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = tiny_config(family, len(tok), ids)
    torch.manual_seed(seed)
    cls = Gemma3ForCausalLM if family == "gemma3" else Gemma4ForCausalLM
    model = cls(config).to(torch.float32)
    model.generation_config.eos_token_id = [ids["<eos>"], ids[chat_formats.get(family).end_of_turn]]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
