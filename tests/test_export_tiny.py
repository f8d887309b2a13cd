"""Tiny random Gemma 3 / Gemma 4 -> base GGUF (--from-hf) -> perturbed LoRA (+ trained token rows) ->
export -> llama.cpp logits.

The export checks itself against the merged PyTorch model; these tests read its figures and also
make it fail on purpose (a wrong adapter, wrong token rows, a wrong base) to show the checks can fail.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.llama]
pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("llama_cpp")

from lorekit.cli import main  # noqa: E402
from lorekit.errors import LorekitError  # noqa: E402
from lorekit.export import ExportConfig, check, run  # noqa: E402
from lorekit.export.gguf_util import GGUFFile  # noqa: E402
from lorekit.hashing import file_sha256 as sha256  # noqa: E402

TURN_TOKENS = {"gemma3": ["<start_of_turn>", "<end_of_turn>"], "gemma4": ["<|turn>", "<turn|>"]}


def make_run(root, family: str, seed: int = 1, rows: bool = False):
    """OUT with adapter/ (a LoRA whose B is random, so it changes the logits; with `rows`, the chat
    format's turn tokens as trained embedding rows too, as training saves them) and train/run.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny_models import make_tiny_model

    out = root / f"out-{family}-{seed}{'-rows' if rows else ''}"
    hf = make_tiny_model(root, family)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    extra = {}
    if rows:
        ids = AutoTokenizer.from_pretrained(hf).convert_tokens_to_ids(TURN_TOKENS[family])
        extra = {"trainable_token_indices": {"embed_tokens": ids}}
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, **extra))
    torch.manual_seed(seed)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
        if "trainable_tokens_delta" in name:  # PEFT keeps the rows' values: move them off the base's
            p.data.add_(torch.randn_like(p) * 0.1)
    peft_model.save_pretrained(out / "adapter")
    (out / "train").mkdir(parents=True)
    (out / "train" / "run.json").write_text(json.dumps({"model": str(hf), "family": family}))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both families exported once through the CLI with default settings (base GGUF from HF)."""
    root = tmp_path_factory.mktemp("export")
    outs = {}
    for family in ("gemma3", "gemma4"):
        out = make_run(root, family, rows=True)
        assert main(["export", str(out), "--prompts", "3"]) == 0
        outs[family] = out
    return outs


@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_llama_cpp_logits_match_merged_pytorch(exported, family):
    report = json.loads((exported[family] / "export" / "export.json").read_text())
    ver = report["verification"]
    assert ver["passed"] and ver["prompts"] == 3 + 2  # + the answer and the two-turn prompts
    comps = ver["comparisons"]
    # adapter.gguf cannot carry trained token rows on a tied embedding: it is checked as the LoRA alone
    assert set(comps) == {"model.gguf vs torch", "base+adapter.gguf vs torch (LoRA only)"}
    for c in comps.values():  # an f16 base: llama.cpp agrees with PyTorch to a few percent of the logit scale
        assert c["top1_close"] == 1.0 and c["rel"] < 0.05 and c["effect"] > 0.98, c
    assert ver["notes"] and "token rows" in ver["notes"][0]
    eot = ver["end_of_turn"]  # the trained rows move the end-of-turn logit; llama.cpp moves it the same
    moved = eot["torch"]["logit"] - eot["torch base"]["logit"]
    assert abs(moved) > 0.05 and abs(eot["model.gguf"]["logit"] - eot["torch"]["logit"]) < 0.2 * abs(moved), eot
    assert report["family"] == family and report["base_source"].startswith("from-hf:")
    assert report["stop"] == [{"gemma3": "<end_of_turn>", "gemma4": "<turn|>"}[family]]
    assert report["type_written"] == "f16"  # the base written from HF is f16, so "auto" keeps f16
    rows = report["adapter"]["token_rows"]
    assert rows and report["adapter"]["token_rows_in"] == {"model.gguf": True, "adapter.gguf": False}


@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_trained_rows_replace_their_rows_and_nothing_else(exported, family):
    import numpy as np
    from safetensors.numpy import load_file

    folder = exported[family] / "export"
    rows = json.loads((folder / "export.json").read_text())["adapter"]["token_rows"]
    (values,) = [v for k, v in load_file(str(exported[family] / "adapter" / "adapter_model.safetensors")).items()
                 if "trainable_tokens" in k]
    model, base = GGUFFile.open(folder / "model.gguf"), GGUFFile.open(folder / "base.gguf")
    np.testing.assert_allclose(model.array("token_embd.weight")[rows], values, atol=1e-3)  # f16
    other = np.ones(base.shape("token_embd.weight")[0], bool)
    other[rows] = False
    assert np.array_equal(np.asarray(model.tensors["token_embd.weight"].data)[other],
                          np.asarray(base.tensors["token_embd.weight"].data)[other])
    assert "output.weight" not in model.tensors  # tied: the same rows are the output layer's


@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_written_files_read_back(exported, family):
    folder = exported[family] / "export"
    report = json.loads((folder / "export.json").read_text())
    assert sorted(report["files"]) == ["Modelfile", "adapter.gguf", "base.gguf", "model.gguf"]
    for name, info in report["files"].items():
        assert info["sha256"] == sha256(folder / name) and info["bytes"] == (folder / name).stat().st_size
    model, base = GGUFFile.open(folder / "model.gguf"), GGUFFile.open(folder / "base.gguf")
    assert model.arch == base.arch == family
    assert sorted(model.tensors) == sorted(base.tensors)
    assert model.get("tokenizer.chat_template") and model.get("tokenizer.ggml.tokens") == base.get("tokenizer.ggml.tokens")
    adapter = GGUFFile.open(folder / "adapter.gguf")
    assert adapter.get("general.type") == "adapter" and adapter.get("adapter.lora.alpha") == 8.0
    assert len(adapter.tensors) == 2 * report["adapter"]["tensors"]
    if family == "gemma4":
        assert model.get("gemma4.attention.shared_kv_layers") == 1
        assert model.get("gemma4.attention.sliding_window_pattern") == [True, False, False]
        assert "per_layer_token_embd.weight" in model.tensors and "rope_freqs.weight" in model.tensors
    modelfile = (folder / "Modelfile").read_text()
    assert "FROM ./model.gguf" in modelfile and report["stop"][0] in modelfile


def test_q8_0_export_and_check_catches_a_swapped_adapter(exported, tmp_path):
    out = make_run(tmp_path, "gemma3", seed=3)
    base = exported["gemma3"] / "export" / "base.gguf"  # also exercises --base-gguf
    result = run(out, ExportConfig(type="q8_0", base_gguf=str(base), verify_prompts=2))
    assert result.passed and result.report["type_written"] == "q8_0"
    assert result.report["base_source"] == "base-gguf"
    assert "Q8_0" in result.report["verification"]["read_back"]["model.gguf"]["tensor_types"]
    assert check(out, ExportConfig(verify_prompts=2)).passed
    # Swap in a different adapter: the files on disk no longer match the PyTorch model.
    other = make_run(tmp_path, "gemma3", seed=7)
    shutil.rmtree(out / "adapter")
    shutil.copytree(other / "adapter", out / "adapter")
    with pytest.raises(LorekitError, match="verification failed"):
        check(out, ExportConfig(verify_prompts=2))
    assert main(["export", str(out), "--check", "--prompts", "2"]) == 2


def test_check_fails_when_the_token_rows_are_missing(exported, tmp_path):
    """The same LoRA without the trained rows (PEFT's saved rows = the base's): model.gguf no longer matches."""
    from safetensors.numpy import load_file, save_file

    out = tmp_path / "out"
    shutil.copytree(exported["gemma3"], out)
    path = out / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(path))
    rows = json.loads((out / "export" / "export.json").read_text())["adapter"]["token_rows"]
    base = GGUFFile.open(out / "export" / "base.gguf").array("token_embd.weight")
    key = next(k for k in tensors if "trainable_tokens" in k)
    tensors[key] = base[rows]
    save_file(tensors, str(path))
    with pytest.raises(LorekitError, match="verification failed") as err:
        check(out, ExportConfig(verify_prompts=1))
    assert "model.gguf vs torch" in str(err.value)


def test_wrong_base_fails_in_one_line_and_keeps_the_previous_export(exported):
    out = exported["gemma3"]
    before = sha256(out / "export" / "model.gguf")
    wrong = exported["gemma4"] / "export" / "base.gguf"
    with pytest.raises(LorekitError) as err:
        run(out, ExportConfig(base_gguf=str(wrong), verify=False))
    message = str(err.value)
    assert "\n" not in message and str(wrong) in message and "adapter" in message and "gemma4" in message
    assert sha256(out / "export" / "model.gguf") == before
    assert not [p for p in out.iterdir() if p.name.startswith(".export")]


def test_gemma4_double_wide_mlp_k_eq_v_and_two_shared_layers(tmp_path):
    """The Gemma 4 features of the larger checkpoints: wider MLP in shared layers (E2B), keys
    reused as values with their own head count on full-attention layers (31B)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    from lorekit import chat_formats
    from lorekit.train.template import chat_template
    from tests.tiny_models import SPECIAL_TOKENS, make_tokenizer

    tok = make_tokenizer()
    tok.chat_template = chat_template(chat_formats.get("gemma4"))
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Gemma4TextConfig(
        vocab_size=len(tok), vocab_size_per_layer_input=len(tok), hidden_size=64, intermediate_size=128,
        num_hidden_layers=5, num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=64,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        num_kv_shared_layers=2, use_double_wide_mlp=True, attention_k_eq_v=True, num_global_key_value_heads=2,
        hidden_size_per_layer_input=16, max_position_embeddings=2048,
        pad_token_id=ids["<pad>"], bos_token_id=ids["<bos>"], eos_token_id=ids["<eos>"])
    torch.manual_seed(0)
    model = Gemma4ForCausalLM(config).float()
    hf = tmp_path / "hf"
    model.save_pretrained(hf)
    tok.save_pretrained(hf)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj", "up_proj", "down_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    out = tmp_path / "out"
    peft_model.save_pretrained(out / "adapter")
    (out / "train").mkdir()
    (out / "train" / "run.json").write_text(json.dumps({"model": str(hf), "family": "gemma4"}))

    result = run(out, ExportConfig(verify_prompts=3))
    assert result.passed, result.report["verification"]
    g = GGUFFile.open(out / "export" / "model.gguf")
    assert g.get("gemma4.feed_forward_length") == [128, 128, 128, 256, 256]
    assert g.get("gemma4.attention.head_count_kv") == [1, 1, 2, 1, 2]
    assert "blk.2.attn_v.weight" not in g.tensors and "blk.1.attn_v.weight" in g.tensors


def test_base_type_without_llama_cpp_keeps_untouched_tensors_byte_for_byte(tmp_path, monkeypatch):
    import numpy as np

    from lorekit.export import from_hf, merge
    from lorekit.export.lora_gguf import read_adapter

    out = make_run(tmp_path, "gemma3")
    base_path = from_hf.convert(tmp_path / "tiny-gemma3", tmp_path / "base-q8.gguf", dtype="q8_0")
    monkeypatch.setattr(merge, "_llama_quantizer", lambda: None)  # as if llama-cpp-python were missing
    adapter = read_adapter(out / "adapter")
    result = merge.merge(GGUFFile.open(base_path), adapter, tmp_path / "model.gguf", "base")
    assert result.method == "per-tensor"
    base, merged = GGUFFile.open(base_path), GGUFFile.open(tmp_path / "model.gguf")
    for name, t in base.tensors.items():
        m = merged.tensors[name]
        assert m.tensor_type == t.tensor_type
        same = np.array_equal(np.asarray(m.data), np.asarray(t.data))
        assert same == (name not in adapter.weights), name
    name = "blk.0.attn_q.weight"
    np.testing.assert_allclose(merged.array(name), base.array(name) + adapter.delta(name), atol=0.02)
