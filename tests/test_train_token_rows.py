"""The turn tokens' embedding rows are trained (a base model never learned to end its turn), and the
row-only forward in lorekit.train.token_rows computes exactly what PEFT's own forward computes."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.tiny_models import make_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {f: make_tiny_model(root, f) for f in ("gemma3", "gemma4")}


def _peft(path, turn_tokens=True):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorekit.models import resolve
    from lorekit.train.recipe import attach_lora

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(path)
    model = attach_lora(AutoModelForCausalLM.from_pretrained(path), resolve(str(path)),
                        {"r": 4, "alpha": 8, "dropout": 0.0, "turn_tokens": turn_tokens}, False, tok)
    return model, tok


def _rows_param(model):
    return next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)


@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_turn_token_rows_are_trainable(tiny, family):
    from lorekit import chat_formats

    model, tok = _peft(tiny[family])
    fmt = chat_formats.get(family)
    want = sorted(tok.convert_tokens_to_ids([fmt.turn_open, fmt.end_of_turn]))
    assert model.peft_config["default"].trainable_token_indices == {"embed_tokens": want}
    assert tuple(_rows_param(model).shape) == (2, model.config.get_text_config().hidden_size)
    off, _ = _peft(tiny[family], turn_tokens=False)
    assert not any("trainable_tokens" in n for n, _ in off.named_parameters())


@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_row_only_forward_equals_peft_forward(tiny, family):
    import torch
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    from lorekit import chat_formats

    model, tok = _peft(tiny[family])
    rows = _rows_param(model)
    with torch.no_grad():
        rows.add_(torch.randn_like(rows))  # rows that differ clearly from the base rows
    fmt = chat_formats.get(family)
    text = f"{fmt.turn_open}user\nWho leads the guild?{fmt.end_of_turn}\n{fmt.turn_open}model\nMara.{fmt.end_of_turn}"
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer)]
    assert layers

    def run():
        rows.grad = None
        logits = model(input_ids=ids).logits
        logits[0, :, tok.convert_tokens_to_ids(fmt.end_of_turn)].sum().backward()
        return logits.detach(), rows.grad.clone()

    fast_logits, fast_grad = run()
    for layer in layers:  # back to PEFT's own forward (copies the whole matrix)
        del layer.forward
    peft_logits, peft_grad = run()
    torch.testing.assert_close(fast_logits, peft_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_grad, peft_grad, atol=1e-5, rtol=1e-5)
    assert fast_grad.abs().sum() > 0


def test_conversion_that_splits_the_turn_tokens_is_refused(tiny, tmp_path):
    from transformers import AutoTokenizer

    from lorekit.errors import LorekitError
    from lorekit.models import resolve
    from lorekit.train.load import _check_chat_tokens

    tok = AutoTokenizer.from_pretrained(tiny["gemma3"])
    profile = resolve(str(tiny["gemma3"]))
    _check_chat_tokens(tok, profile, tmp_path / "m.gguf")  # one token each: accepted

    def split_everything(text, **kw):  # a vocabulary without the turn tokens
        return {"input_ids": [ord(c) for c in text]}

    with pytest.raises(LorekitError, match=r"m\.gguf: .*<end_of_turn> \(13 pieces\)"):
        _check_chat_tokens(split_everything, profile, tmp_path / "m.gguf")
