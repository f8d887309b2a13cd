"""The real Gemma 3 270M from the PyPI GGUF: converted once, cached, and labelled like training does."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.real_model, pytest.mark.slow]


@pytest.fixture
def cached_home(model_cache, monkeypatch):
    """Point LOREKIT_HOME at the session cache so the slow conversion is shared (LOREKIT_TEST_CACHE)."""
    monkeypatch.setenv("LOREKIT_HOME", str(model_cache))
    return model_cache


def test_270m_converts_once_then_loads_from_cache(cached_home):
    import torch

    from lorekit import chat_formats
    from lorekit.models import resolve
    from lorekit.train.data import IGNORE, collate, encode
    from lorekit.train.load import ensure_converted, load_model
    from lorekit.train.loop import masked_loss

    path = ensure_converted(resolve("gemma3-270m"))
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    started = time.perf_counter()
    assert ensure_converted(resolve("gemma3-270m")) == path  # cached: no second conversion
    assert time.perf_counter() - started < 2
    model, tok, profile = load_model("gemma3-270m")
    assert profile.family == "gemma3" and model.config.vocab_size == 262144
    fmt = chat_formats.get("gemma3")
    for special in ("<bos>", "<start_of_turn>", "<end_of_turn>"):
        assert len(tok(special, add_special_tokens=False).input_ids) == 1, special
    row = [{"from": "system", "value": "You are Ilsa, the miller of Brindle."},
           {"from": "human", "value": "Who leads the Ash Guild?"},
           {"from": "gpt", "value": "Mara Vell leads the Ash Guild."}]
    ex = encode(tok, fmt, row, max_length=256)
    trainable = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    assert tok.decode(trainable) == "Mara Vell leads the Ash Guild.<end_of_turn>"
    assert tok.decode(ex.input_ids) == fmt.render([{"role": "system", "content": row[0]["value"]},
                                                   {"role": "user", "content": row[1]["value"]},
                                                   {"role": "assistant", "content": row[2]["value"]}])
    # the output layer applied only at labelled positions gives the model's own loss
    batch = collate([ex], tok.pad_token_id)
    with torch.no_grad():
        loss, n = masked_loss(model, batch, bf16=False)
        reference = model(**batch).loss
    assert n == len(trainable)
    torch.testing.assert_close(loss / n, reference, atol=1e-4, rtol=1e-4)
