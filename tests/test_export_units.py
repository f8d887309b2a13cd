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


def write_rows_adapter(folder, rows: list[int], width: int, spec=None, key="base_model.model.model.embed_tokens"):
    """A PEFT adapter with one LoRA pair and trained token rows (PEFT saves the rows' new values)."""
    write_adapter(folder, {"layers.0.self_attn.q_proj": (64, 64)},
                  trainable_token_indices=spec if spec is not None else {"embed_tokens": rows})
    tensors = safetensors_numpy.load_file(str(folder / "adapter_model.safetensors"))
    values = np.random.default_rng(1).standard_normal((len(rows), width)).astype(np.float32)
    tensors[f"{key}.token_adapter.trainable_tokens_delta"] = values
    safetensors_numpy.save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder, values


def test_trained_token_rows_are_read_and_checked(tmp_path):
    folder, values = write_rows_adapter(tmp_path / "a", [5, 6], 64)
    adapter = lora_gguf.read_adapter(folder)
    assert adapter.token_rows.indices == [5, 6] and adapter.touched == {"blk.0.attn_q.weight", "token_embd.weight"}
    embd = np.zeros((8, 64), np.float32)
    changed = adapter.apply("token_embd.weight", embd)
    np.testing.assert_array_equal(changed[[5, 6]], values)  # replaced, not added
    assert not changed[:5].any() and not embd.any()
    shapes = {"blk.0.attn_q.weight": (64, 64), "token_embd.weight": (8, 64)}
    lora_gguf.check_against_base(adapter, shapes, 1, "base.gguf")
    with pytest.raises(LorekitError, match=r"token rows \[5, 6\] .* 6x64 token embedding"):
        lora_gguf.check_against_base(adapter, {**shapes, "token_embd.weight": (6, 64)}, 1, "base.gguf")
    with pytest.raises(LorekitError, match="lm_head"):
        lora_gguf.read_adapter(write_rows_adapter(tmp_path / "b", [5], 64, key="base_model.model.lm_head")[0])
    with pytest.raises(LorekitError, match="does not list the 2 trained"):
        lora_gguf.read_adapter(write_rows_adapter(tmp_path / "c", [5, 6], 64, spec={"embed_tokens": [5]})[0])
    g4 = write_rows_adapter(tmp_path / "d", [3], 64, spec=[3], key="base_model.model.model.language_model.embed_tokens")
    assert lora_gguf.read_adapter(g4[0]).token_rows.indices == [3]


def write_base(path, vocab=16, hidden=64, seed=0):
    """A small quantized 'gemma3' GGUF: Q8_0 token_embd, a Q5_0 projection (a 5-bit type like the 270M's), a norm."""
    rng = np.random.default_rng(seed)
    T = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_file_type(8)  # MOSTLY_Q5_0
    w.add_block_count(1)
    tensors = {"token_embd.weight": (rng.standard_normal((vocab, hidden)) * 0.05, T.Q8_0),
               "blk.0.attn_q.weight": (rng.standard_normal((64, hidden)) * 0.05, T.Q5_0),
               "blk.0.attn_norm.weight": (rng.standard_normal(hidden), T.F32)}
    for name, (array, qtype) in tensors.items():
        array = array.astype(np.float32)
        data = gguf.quants.quantize(array, qtype) if qtype != T.F32 else array
        w.add_tensor(name, data, raw_shape=data.shape if qtype == T.F32 else None, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return GGUFFile.open(path)


def _survives(merged, base, adapter, name) -> float:
    """Share of the LoRA's change that is still in the merged file (1 = all of it)."""
    got, want = (merged.array(name) - base.array(name)).ravel(), adapter.delta(name).ravel()
    return float(got @ want / (want @ want))


def test_auto_keeps_untouched_bytes_and_a_small_lora_that_requantizing_rounds_away(tmp_path, monkeypatch):
    from lorekit.export import merge, verify

    base = write_base(tmp_path / "base.gguf")
    folder, values = write_rows_adapter(tmp_path / "a", [5, 6], 64)
    adapter = lora_gguf.read_adapter(folder)
    a, b, scale = adapter.weights["blk.0.attn_q.weight"]
    # a trained LoRA's size: about 1.5% of the weights (the 270M's trained adapter: 1.2-2%)
    b *= 0.015 * np.abs(base.array("blk.0.attn_q.weight")).mean() / np.abs(adapter.delta("blk.0.attn_q.weight")).mean()
    result = merge.merge(base, adapter, tmp_path / "auto.gguf", "auto")
    assert (result.type, result.method) == ("Q5_0+Q8_0", "per-tensor")
    auto = GGUFFile.open(tmp_path / "auto.gguf")
    T = gguf.GGMLQuantizationType
    assert auto.tensors["blk.0.attn_q.weight"].tensor_type == T.Q8_0
    assert _survives(auto, base, adapter, "blk.0.attn_q.weight") > 0.95
    assert np.array_equal(auto.tensors["blk.0.attn_norm.weight"].data, base.tensors["blk.0.attn_norm.weight"].data)
    embd, base_embd = np.asarray(auto.tensors["token_embd.weight"].data), np.asarray(base.tensors["token_embd.weight"].data)
    others = [i for i in range(16) if i not in (5, 6)]
    assert auto.tensors["token_embd.weight"].tensor_type == T.Q8_0 and np.array_equal(embd[others], base_embd[others])
    np.testing.assert_allclose(auto.array("token_embd.weight")[[5, 6]], values, atol=0.02)  # Q8_0 of the new rows
    assert verify.limit_for(tmp_path / "auto.gguf", tmp_path / "base.gguf") == verify.LIMITS["q8_0"]
    assert verify.limit_for(tmp_path / "base.gguf") == verify.QUANTIZED_LIMIT

    monkeypatch.setattr(merge, "_llama_quantizer", lambda: None)  # `base` without llama.cpp: own types per tensor
    merge.merge(base, adapter, tmp_path / "base-type.gguf", "base")
    requantized = GGUFFile.open(tmp_path / "base-type.gguf")
    assert requantized.tensors["blk.0.attn_q.weight"].tensor_type == T.Q5_0
    assert _survives(requantized, base, adapter, "blk.0.attn_q.weight") < 0.5  # snapped back onto the base's grid


def test_fast_gguf_reader_reads_what_the_gguf_package_reads(tmp_path):
    """The export's GGUF reader (one view per numeric array, plain views of the mapping) must give the
    same metadata and tensors as gguf.GGUFReader: every kind of value, arrays of strings included."""
    from lorekit.gguf_reader import open_gguf, patched

    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_string("general.name", "tiny ünïcode")
    w.add_uint32("gemma3.block_count", 2)
    w.add_bool("x.flag", True)
    w.add_array("tokenizer.ggml.tokens", ["<pad>", "", "<end_of_turn>", "héllo", "▁world"] * 50)
    w.add_array("tokenizer.ggml.scores", [float(i) / 7 for i in range(250)])
    w.add_array("tokenizer.ggml.token_type", [i % 3 for i in range(250)])
    w.add_array("x.empty", [])
    w.add_array("x.bools", [True, False, True])
    w.add_key_value("x.i64", [-(2**40), 5], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT64)
    rng = np.random.default_rng(0)
    w.add_tensor("a.weight", rng.standard_normal((4, 64)).astype(np.float32))
    q = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("b.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    slow, fast = gguf.GGUFReader(path), open_gguf(path)
    assert list(fast.fields) == list(slow.fields)
    for key, field in slow.fields.items():
        assert fast.fields[key].types == field.types, key
        assert fast.fields[key].contents() == field.contents(), key
        assert fast.fields[key].data == field.data, key
        assert [p.tolist() for p in fast.fields[key].parts] == [p.tolist() for p in field.parts], key
    assert fast.fields["tokenizer.ggml.tokens"].contents(3) == "héllo"
    assert fast.fields["tokenizer.ggml.scores"].contents(7) == slow.fields["tokenizer.ggml.scores"].contents(7)
    assert fast.data_offset == slow.data_offset
    for a, b in zip(fast.tensors, slow.tensors, strict=True):
        assert (a.name, a.tensor_type, list(a.shape), a.n_bytes) == (b.name, b.tensor_type, list(b.shape), b.n_bytes)
        assert np.array_equal(np.asarray(a.data), np.asarray(b.data))
    assert GGUFFile.open(path).get("tokenizer.ggml.scores") == slow.fields["tokenizer.ggml.scores"].contents()
    with patched():  # what transformers' GGUF loader gets during the 270M's one-time conversion
        assert type(gguf.GGUFReader(path)) is type(fast)
    assert gguf.GGUFReader is type(slow)
