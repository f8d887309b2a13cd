"""Export building blocks without torch or llama.cpp: adapter names and shapes, metadata, Modelfile."""

from __future__ import annotations

import json

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from lorekit.errors import LorekitError  # noqa: E402
from lorekit.export import from_hf, lora_gguf, modelfile  # noqa: E402
from lorekit.export.gguf_util import GGUFFile  # noqa: E402


def write_adapter(folder, keys: dict[str, tuple[int, int]], r=4, alpha=8, prefix="base_model.model.model.", **cfg):
    """A PEFT-shaped adapter: {module path: (out, in)} -> lora_A (r, in), lora_B (out, r)."""
    rng = np.random.default_rng(0)
    tensors = {}
    for module, (out, inp) in keys.items():
        tensors[f"{prefix}{module}.lora_A.weight"] = rng.standard_normal((r, inp)).astype(np.float32)
        tensors[f"{prefix}{module}.lora_B.weight"] = rng.standard_normal((out, r)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    safetensors_numpy.save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "base_model_name_or_path": "tiny", **cfg}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_peft_keys_map_to_llama_cpp_names_for_gemma3_and_gemma4_layouts(tmp_path):
    g3 = lora_gguf.read_adapter(write_adapter(tmp_path / "a", {
        "layers.0.self_attn.q_proj": (128, 64), "layers.1.mlp.down_proj": (64, 256)}))
    assert sorted(g3.weights) == ["blk.0.attn_q.weight", "blk.1.ffn_down.weight"]
    g4 = lora_gguf.read_adapter(write_adapter(tmp_path / "b", {
        "language_model.layers.2.self_attn.o_proj": (64, 128), "language_model.layers.0.per_layer_input_gate": (16, 64)}))
    assert sorted(g4.weights) == ["blk.0.inp_gate.weight", "blk.2.attn_output.weight"]
    assert g4.n_layers == 3


def test_scale_follows_peft_alpha_over_r_rslora_and_alpha_pattern(tmp_path):
    plain = lora_gguf.read_adapter(write_adapter(tmp_path / "a", {"layers.0.self_attn.q_proj": (8, 8)}, r=4, alpha=8))
    assert plain.weights["blk.0.attn_q.weight"][2] == pytest.approx(2.0)
    rs = lora_gguf.read_adapter(write_adapter(tmp_path / "b", {"layers.0.self_attn.q_proj": (8, 8)}, r=4, alpha=8,
                                              use_rslora=True))
    assert rs.weights["blk.0.attn_q.weight"][2] == pytest.approx(4.0)
    pat = lora_gguf.read_adapter(write_adapter(tmp_path / "c", {"layers.0.self_attn.q_proj": (8, 8),
                                                                "layers.0.mlp.up_proj": (8, 8)},
                                               r=4, alpha=8, alpha_pattern={"up_proj": 16}))
    assert pat.weights["blk.0.ffn_up.weight"][2] == pytest.approx(4.0)
    a, b, scale = plain.weights["blk.0.attn_q.weight"]
    np.testing.assert_allclose(plain.delta("blk.0.attn_q.weight"), scale * b @ a, rtol=1e-6)


def test_adapter_gguf_has_llama_cpp_keys_and_shapes(tmp_path):
    adapter = lora_gguf.read_adapter(write_adapter(tmp_path / "a", {"layers.0.self_attn.q_proj": (128, 64)}, r=4, alpha=8))
    out = tmp_path / "adapter.gguf"
    lora_gguf.write_adapter_gguf(adapter, "gemma3", out)
    g = GGUFFile.open(out)
    assert (g.arch, g.get("general.type"), g.get("adapter.type"), g.get("adapter.lora.alpha")) == \
        ("gemma3", "adapter", "lora", 8.0)
    shapes = {t.name: [int(n) for n in t.shape] for t in g.reader.tensors}
    # llama.cpp checks: W.ne = [in, out]; A.ne = [in, r]; B.ne = [r, out]
    assert shapes == {"blk.0.attn_q.weight.lora_a": [64, 4], "blk.0.attn_q.weight.lora_b": [4, 128]}


def test_unequal_alphas_are_folded_into_b(tmp_path):
    adapter = lora_gguf.read_adapter(write_adapter(tmp_path / "a", {"layers.0.self_attn.q_proj": (8, 8),
                                                                    "layers.0.mlp.up_proj": (8, 8)},
                                                   alpha=8, alpha_pattern={"up_proj": 32}))
    out = tmp_path / "adapter.gguf"
    lora_gguf.write_adapter_gguf(adapter, "gemma3", out)
    g = GGUFFile.open(out)
    assert g.get("adapter.lora.alpha") == 0.0  # llama.cpp: alpha 0 means scale 1
    a, b, scale = adapter.weights["blk.0.ffn_up.weight"]
    np.testing.assert_allclose(g.array("blk.0.ffn_up.weight.lora_b"), b * scale, rtol=1e-6)


def test_mismatched_base_is_one_line_naming_both(tmp_path):
    adapter = lora_gguf.read_adapter(write_adapter(tmp_path / "a", {"layers.3.self_attn.q_proj": (128, 64)}))
    with pytest.raises(LorekitError, match=r"adapter .*a vs base base.gguf: .*layers up to 3"):
        lora_gguf.check_against_base(adapter, {"blk.3.attn_q.weight": (128, 64)}, 2, "base.gguf")
    with pytest.raises(LorekitError, match=r"vs base base.gguf: blk.3.attn_q.weight is 256x64 in the base"):
        lora_gguf.check_against_base(adapter, {"blk.3.attn_q.weight": (256, 64)}, 4, "base.gguf")
    lora_gguf.check_against_base(adapter, {"blk.3.attn_q.weight": (128, 64)}, 4, "base.gguf")


def test_unsupported_adapters_are_refused(tmp_path):
    with pytest.raises(LorekitError, match="DoRA"):
        lora_gguf.read_adapter(write_adapter(tmp_path / "a", {"layers.0.self_attn.q_proj": (8, 8)}, use_dora=True))
    with pytest.raises(LorekitError, match="embed_tokens|not a LoRA weight"):
        lora_gguf.read_adapter(write_adapter(tmp_path / "b", {"embed_tokens": (8, 8)}))
    with pytest.raises(LorekitError, match="run `lorekit train` first"):
        lora_gguf.read_adapter(tmp_path / "missing")


def test_checkpoint_names_agree_with_gguf_package_maps():
    """Our explicit table must say what gguf-py's own HF -> GGUF map says for Gemma 4 (a superset of 3)."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA4, 4)
    for hf, ours in from_hf.LAYER_NAMES.items():
        assert names.get_name("model.layers.1." + hf.removesuffix(".weight")) + ".weight" == "blk.1." + ours
    for hf, ours in from_hf.GLOBAL_NAMES.items():
        assert names.get_name("model." + hf.removesuffix(".weight")) + ".weight" == ours
    known = {n.format(bid=1) for n in gguf.TENSOR_NAMES.values()}
    assert all(f"blk.1.{n.removesuffix('.weight')}" in known for n in from_hf.LAYER_NAMES.values())


def test_kv_sharing_layout_check():
    from_hf._check_kv_sharing([True, False, False], 1)  # tiny Gemma 4: shares the full layer's cache
    from_hf._check_kv_sharing([True, True, False, True, False], 2)  # E2B-like tail
    with pytest.raises(LorekitError, match="KV sharing"):
        from_hf._check_kv_sharing([False, True, True], 1)


@pytest.mark.parametrize("family,stop,turn", [("gemma3", "<end_of_turn>", "<start_of_turn>model\n"),
                                              ("gemma4", "<turn|>", "<|turn>model\n")])
def test_modelfile_has_template_stop_and_persona(family, stop, turn):
    text = modelfile.render(family, system="You are Mara Vell, the smith.")
    assert text.splitlines()[1] == "FROM ./model.gguf"
    assert f'PARAMETER stop "{stop}"' in text
    assert turn in text and 'SYSTEM """You are Mara Vell, the smith."""' in text
    assert "SYSTEM" not in modelfile.render(family)
    with pytest.raises(LorekitError, match="cannot quote"):
        modelfile.render(family, system='say """hi"""')


_GO_MAIN = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

func main() {
	var msgs []map[string]string
	if err := json.Unmarshal([]byte(os.Args[2]), &msgs); err != nil { panic(err) }
	var typed []struct{ Role, Content string }
	for _, m := range msgs { typed = append(typed, struct{ Role, Content string }{m["role"], m["content"]}) }
	text, err := os.ReadFile(os.Args[1])
	if err != nil { panic(err) }
	t := template.Must(template.New("m").Parse(string(text)))
	if err := t.Execute(os.Stdout, map[string]any{"Messages": typed}); err != nil { panic(err) }
}
"""


@pytest.mark.skipif(not __import__("shutil").which("go"), reason="needs the Go toolchain (Ollama's template engine)")
def test_modelfile_templates_render_like_training_in_go_text_template(tmp_path):
    """Ollama runs TEMPLATE with Go's text/template: it must give the exact text training used."""
    import subprocess

    from lorekit import chat_formats

    (tmp_path / "main.go").write_text(_GO_MAIN)
    subprocess.run(["go", "mod", "init", "tpl"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(["go", "build", "-o", "render", "."], cwd=tmp_path, check=True, capture_output=True)
    convs = [
        [{"role": "user", "content": "Who leads the Ash Guild?"}],
        [{"role": "system", "content": "You are Mara."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Who?"}],
    ]
    for family, template in modelfile.TEMPLATES.items():
        (tmp_path / f"{family}.tmpl").write_text(template)
        fmt = chat_formats.get(family)
        for conv in convs:
            got = subprocess.run([str(tmp_path / "render"), str(tmp_path / f"{family}.tmpl"), json.dumps(conv)],
                                 check=True, capture_output=True, text=True).stdout
            assert got == fmt.render(conv, add_generation_prompt=True).removeprefix(fmt.bos)


def test_base_source_order_and_errors(tmp_path):
    from lorekit.export.config import ExportConfig
    from lorekit.export.pipeline import base_source, train_info

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gemma3_text"}))
    (hf / "model.safetensors").write_bytes(b"")
    assert base_source(ExportConfig(base_gguf="x.gguf", from_hf=str(hf)), str(hf))[2] == "base-gguf"
    assert base_source(ExportConfig(from_hf="model"), str(hf))[1] == hf.resolve()
    assert base_source(ExportConfig(), str(hf))[2] == f"from-hf:{hf.resolve()}"  # a local HF folder converts
    with pytest.raises(LorekitError, match="--base-gguf PATH"):
        base_source(ExportConfig(), "google/gemma-4-E2B-it")
    with pytest.raises(LorekitError, match="not a folder"):
        base_source(ExportConfig(from_hf=str(tmp_path / "nope")), str(hf))
    assert train_info(tmp_path, str(hf)) == {"model": str(hf), "family": "gemma3"}
