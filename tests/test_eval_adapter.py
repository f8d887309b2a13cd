"""`lorekit eval --backend adapter`: the PyTorch path on a tiny random Gemma 3 with a LoRA adapter."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("peft")
pytestmark = pytest.mark.torch


@pytest.fixture
def build(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.tiny_models import make_tiny_model

    model_dir = make_tiny_model(tmp_path, "gemma3")
    out = tmp_path / "build"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    # init_lora_weights=False: random A and B, so the adapter really changes the answers.
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out / "adapter")
    ds = out / "dataset"
    ds.mkdir(parents=True)
    row = {"conversations": [{"from": "system", "value": "You are Mara Vell."},
                             {"from": "human", "value": "Who leads the Ash Guild?"},
                             {"from": "gpt", "value": "Mara Vell leads it."}],
           "meta": {"npc": "mara-vell", "kind": "fact", "expect": ["Mara Vell"], "facts": ["f1"], "entities": []}}
    for name in ("train.jsonl", "eval.jsonl"):
        (ds / name).write_text(json.dumps(row) + "\n")
    (ds / "report.json").write_text("{}")
    (out / "train").mkdir()
    (out / "train" / "run.json").write_text(json.dumps({"model": str(model_dir), "family": "gemma3"}))
    return out, model_dir


def test_adapter_backend_compares_with_and_without_the_adapter(build):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorekit.evaluate import EvalConfig, run
    from lorekit.evaluate.generate import TorchGenerator

    out, model_dir = build
    cfg = EvalConfig(backend="adapter", max_tokens=6, general=False)
    first = json.loads(run(out, cfg).report_json.read_text())
    second = json.loads(run(out, cfg).report_json.read_text())
    q1, q2 = first["questions"][0], second["questions"][0]
    assert first["models"]["backend"] == "adapter"
    assert (q1["base"]["answer"], q1["tuned"]["answer"]) == (q2["base"]["answer"], q2["tuned"]["answer"])
    assert q1["base"]["answer"] != q1["tuned"]["answer"]  # the adapter changed the model
    # "base" is the plain model: the same answer as a fresh load without any adapter
    plain = TorchGenerator(AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir),
                           "gemma3", max_tokens=6)
    msgs = [{"role": "system", "content": "You are Mara Vell."}, {"role": "user", "content": "Who leads the Ash Guild?"}]
    assert plain.reply(msgs).text == q1["base"]["answer"]
