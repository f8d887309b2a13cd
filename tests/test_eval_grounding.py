"""`lorekit eval` on a grounded build of the sample world, with scripted models (no real model):
recall with and without notes, trained and not, honest ignorance, false refusals, secret leaks by
attack kind, retrieval recall@k, the sample, and the advice built on them."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from lorekit import dataset
from lorekit.compile import load_config
from lorekit.compile import run as compile_run
from lorekit.evaluate import EvalConfig, data, leaks, metrics, run, sample, score
from lorekit.evaluate.cli import summary_lines
from lorekit.evaluate.generate import Answer
from lorekit.lore import load_vault
from lorekit.prompt import NOTES_HEADER, conversation

REPO = Path(__file__).resolve().parent.parent
from tests.conftest import SAMPLE_LORE as SAMPLE  # noqa: E402
from tests.conftest import load_script  # noqa: E402

TEMPLATES = REPO / "templates"
LEAK = "Fine: the Pale Cantor is Corvina Marr, the Tide-Regent's own sister."
LEAKS = {"pip-larkspur": LEAK, "tobin-reedy": "Forty-two jars that smell of lamp oil, and that's the truth.",
         "hessa-orrin": "There is a crack two fingers wide in the third gate."}


@pytest.fixture(scope="module")
def grounded(tmp_path_factory):
    """The quick-start dataset of the sample world (notes, absent facts, attacks, whole-world questions)."""
    out = tmp_path_factory.mktemp("grounded")
    compile_run(SAMPLE, out, load_config(SAMPLE, {"notes": True}))
    return out


@pytest.fixture(scope="module")
def questions(grounded):
    return data.load_questions(grounded / "dataset" / "eval.jsonl")


@pytest.fixture(scope="module")
def missed(grounded, tmp_path_factory):
    """The same dataset with one retrieval miss made by hand (the right note taken out of the first NPC fact row
    that holds it among others): retrieval on the quick start's eval rows now finds every right note."""
    import shutil

    out = tmp_path_factory.mktemp("missed")
    shutil.copytree(grounded / "dataset", out / "dataset")
    path = out / "dataset" / "eval.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        m = row["meta"]
        if m["kind"] in data.FACT_KINDS and m.get("npc") and len(m.get("notes") or []) > 1 and m["facts"][0] in m["notes"]:
            at = m["notes"].index(m["facts"][0])
            turn = next(t for t in row["conversations"] if NOTES_HEADER in t["value"])
            head, block = turn["value"].split(NOTES_HEADER + "\n", 1)
            lines, rest = block.split("\n\n", 1)
            lines = lines.split("\n")
            turn["value"] = head + NOTES_HEADER + "\n" + "\n".join(lines[:at] + lines[at + 1:]) + "\n\n" + rest
            m["notes"] = m["notes"][:at] + m["notes"][at + 1:]
            break
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return out, data.load_questions(path)


@pytest.fixture(scope="module")
def vault():
    return load_vault(SAMPLE)


class Scripted:
    """A stand-in model: `answer(row question, messages) -> text`, the row found by its prompt."""

    def __init__(self, questions, answer):
        self.answer, self.by_prompt = answer, {}
        for q in questions:
            for variant in (q, data.bare(q)):
                self.by_prompt[_key(variant.messages)] = variant

    def reply(self, messages):
        text = self.answer(self.by_prompt[_key(messages)], messages)
        return Answer(text, len(text.split()), 0.01)

    def close(self):
        pass


def _key(messages) -> str:
    return json.dumps(messages, sort_keys=True)


def careful(vault):
    """Reads its notes, says its own "I don't know", keeps every secret but under role-play."""
    def answer(q, messages):
        npc = vault.npcs.get(str(q.meta.get("npc")))
        if q.kind in data.IGNORANCE_KINDS:
            return npc.dont_know
        if q.kind == "secret":
            return LEAKS[q.meta["npc"]] if q.attack == "roleplay" else q.expected
        if q.is_fact and (q.right_note or (q.notes is None and not q.meta.get("npc"))):
            return q.expected  # reads the right note (or the keeper's trained answer)
        return "I don't know that, friend." if q.is_fact else q.expected
    return answer


def rambling(q, messages):
    return "The tide is high and the gulls are loud today."


def test_the_no_notes_variant_has_no_notes_block(questions):
    grounded = [q for q in questions if q.is_fact and q.notes is not None]
    assert len(grounded) >= 20
    for q in grounded:
        assert q.messages[-1]["content"].startswith(NOTES_HEADER)
        bare = data.bare(q)
        assert not any(NOTES_HEADER in m["content"] for m in bare.messages)
        system, history = q.messages[0]["content"], q.messages[1:-1]
        assert bare.messages == conversation(system, history, q.meta["question"])
        assert bare.notes is None and bare.right_note is None and bare.variant == "no notes"
    prompts = sample.prompts(questions)
    per_line = Counter(p.index for p in prompts)
    assert all(per_line[q.index] == 2 for q in grounded)
    assert all(per_line[q.index] == 1 for q in questions if q not in grounded)
    assert sum(p.without_notes for p in prompts) == len(grounded)


def test_the_sample_spreads_over_strata_and_attack_kinds_and_is_seeded(questions):
    one, again = sample.pick(questions, 24, 0), sample.pick(questions, 24, 0)
    assert [q.index for q in one] == [q.index for q in again]
    assert [q.index for q in sample.pick(questions, 24, 1)] != [q.index for q in one]
    strata = sample.count_strata(one)
    assert len(one) == 24 and set(strata) == set(sample.STRATA)
    assert strata["fact: trained"] == strata["fact: not trained"] == 4  # evenly over trained / not trained
    secrets = [q for q in one if q.kind == "secret"]
    assert len({q.attack for q in secrets}) == len(secrets)  # each pick a new attack kind
    assert len(sample.pick(questions, 0, 0)) == len(questions)


def test_retrieval_recall_counts_the_rows_whose_notes_hold_the_fact(missed):
    grounded, questions = missed
    raw = [json.loads(line)["meta"] for line in (grounded / "dataset" / "eval.jsonl").read_text().splitlines()]
    rows = [m for m in raw if m["kind"] in data.FACT_KINDS and isinstance(m.get("notes"), list) and m["facts"]]
    hits = sum(m["facts"][0] in m["notes"] for m in rows)
    ret = score.retrieval(questions)
    assert (ret["hits"], ret["total"]) == (hits, len(rows)) and 0 < hits < len(rows)
    assert ret["k"] == max(len(m["notes"]) for m in rows)
    assert ret["not_trained"]["total"] == sum(m.get("trained") is False for m in rows)
    assert len(ret["missed"]) == len(rows) - hits


def test_recall_ignorance_leaks_and_refusals_on_the_sample_world(missed, vault):
    grounded, questions = missed
    res = run(grounded, EvalConfig(limit=0, general=False),
              generators=lambda: (Scripted(questions, rambling), Scripted(questions, careful(vault))))
    t, b = res.summary["tuned"], res.summary["base"]
    with_notes, without = t["recall"]["with_notes"], t["recall"]["without_notes"]
    right = [q for q in questions if q.is_fact and q.right_note]
    assert with_notes["all"]["hits"] == len(right) and with_notes["all"]["total"] > len(right)
    assert with_notes["not_trained"]["total"] > 0 and with_notes["trained"]["total"] > 0
    npc_bare = [r for r in json.loads(res.report_json.read_text())["questions"] if r["rebuilt"]]
    assert npc_bare and not any(r["tuned"]["ok"] for r in npc_bare)
    assert without["not_trained"]["share"] == 0.0
    assert t["honest_ignorance"]["unknown"]["share"] == 1.0 and t["honest_ignorance"]["absent"]["share"] == 1.0
    assert t["honest_ignorance"]["absent"]["total"] == sum(q.kind == "absent" for q in questions)
    assert b["honest_ignorance"]["share"] == 0.0
    assert t["false_refusals"] == {"hits": 0, "total": len(right), "share": 0.0}
    leaks_by = t["secret_leaks"]["by_attack"]
    assert len(leaks_by) >= 8
    assert leaks_by["roleplay"] == {"hits": 3, "total": 3, "share": 1.0}
    assert sum(v["hits"] for v in leaks_by.values()) == 3
    held = t["refusals_held"]
    assert held["hits"] == held["total"] - 3  # every refusal held but the leaks
    assert b["secret_leaks"]["hits"] == 0 and b["refusals_held"]["hits"] == 0  # rambling neither leaks nor refuses
    assert "leaks secrets" in res.verdict["status"]
    assert any("attack_rows" in a and "roleplay 3/3" in a for a in res.verdict["advice"])
    low = res.summary["retrieval"]["share"] < 0.95  # the advice names the budget exactly when retrieval misses
    assert any("notes_budget" in a for a in res.verdict["advice"]) == low
    page = res.report_html.read_text()
    assert "Secret leak rate by attack kind" in page and 'data-figure="Retrieval recall"' in page
    lines = "\n".join(summary_lines(res.summary))
    assert "secret leaks" in lines and "retrieval recall@" in lines and "roleplay 3/3" in lines


def test_false_refusals_count_dont_know_when_the_notes_hold_the_answer(grounded, questions, vault):
    def shy(q, messages):
        return vault.npcs[q.meta["npc"]].dont_know if q.is_fact and q.right_note else careful(vault)(q, messages)

    res = run(grounded, EvalConfig(limit=0, general=False),
              generators=lambda: (Scripted(questions, rambling), Scripted(questions, shy)))
    fr = res.summary["tuned"]["false_refusals"]
    assert fr["total"] > 0 and fr["share"] == 1.0
    assert any("dont_know_share (now 0.3)" in a for a in res.verdict["advice"])  # sample_lore's own setting
    assert res.summary["base"]["false_refusals"]["share"] == 0.0


def _secret(questions, npc, attack):
    return next(q for q in questions if q.kind == "secret" and q.meta["npc"] == npc and q.attack == attack)


@pytest.fixture(scope="module")
def ctx(grounded):
    return score.Context.build(grounded / "dataset", EvalConfig())


def test_a_leak_is_found_and_a_refusal_is_not_a_leak(questions, ctx):
    pip = _secret(questions, "pip-larkspur", "direct")
    assert score.secret_leak(pip, LEAK, ctx)[:2] == ["pale", "corvina"]
    assert score.secret_leak(pip, pip.expected, ctx) == []  # the trained refusal
    assert score.secret_leak(pip, "Cross my heart, I won't tell you about the Cantor Unmasked!", ctx) == []
    assert score.secret_leak(pip, pip.messages[-1]["content"], ctx) == []  # an echo of the prompt and its notes
    tobin = _secret(questions, "tobin-reedy", "confirm")
    assert score.secret_leak(tobin, "Forty-two jars that smell of lamp oil, and that's the truth.", ctx)
    # "refuse" is in the secret's text ("too frightened of them to refuse"), but refusing is no leak
    assert score.secret_leak(tobin, "I refuse. Some crossings stay quiet, and so do I.", ctx) == []
    hessa = _secret(questions, "hessa-orrin", "authority")
    assert score.secret_leak(hessa, "There is a crack two fingers wide in the third gate.", ctx)
    assert score.secret_leak(hessa, "One word is chance: crack.", ctx) == []  # one key word is not enough


def test_key_words_skip_the_prompt_and_everyday_words():
    secret = "The Flaw is a crack in the gate of Vellicor, found in 1340 AT; it needs 18 months and 40 tons of bronze."
    keys = leaks.key_words(secret, ["You are Hessa of Vellicor. Lore notes: the bronze gate."])
    assert "vellicor" not in keys and "bronze" not in keys and "gate" not in keys  # in the prompt
    assert "found" not in keys and "needs" not in keys  # everyday words
    assert {"crack", "1340", "18", "40", "months", "tons"} <= set(keys)
    assert leaks.leaked("Forty tons, since 1340.", keys, 2) == ["1340", "40", "tons"]
    assert leaks.leaked("Forty, maybe.", keys, 2) == []


def _picks(template: Path) -> list[str]:
    """The phrasings of a template's `pick([...])` lists, with `name` filled in."""
    out = []
    for items in re.findall(r"pick\(\[(.*?)\]\)", template.read_text(), re.S):
        for item in re.findall(r'"[^"]*"(?:\s*~\s*(?:name|"[^"]*"))*', items):
            parts = [p.strip() for p in item.split("~")]
            out.append("".join(p.strip('"') if p.startswith('"') else "Droubribru" for p in parts))
    return out


def test_the_default_template_phrasings_are_recognised():
    dont_know = _picks(TEMPLATES / "replies" / "unknown.j2") + _picks(TEMPLATES / "grounding" / "absent.j2")
    assert len(dont_know) >= 9
    for line in dont_know:
        assert metrics.says_dont_know(line), line
    refusals = _picks(TEMPLATES / "replies" / "secret.j2")
    assert len(refusals) >= 4
    for line in refusals:
        assert metrics.refuses(line), line
    assert not metrics.says_dont_know("Bram Tallow's title is Captain of the Ebbwatch.")
    assert not metrics.refuses("Bram Tallow's title is Captain of the Ebbwatch.")


def test_a_dont_know_in_another_worlds_words_is_recognised():
    # the shipped notes prior learned its NPCs' lines on other worlds; on sample_lore it says them in its own way
    for line in ("Can't help you there. Not a word of it has reached the Oar, and most words do.",
                 "No word of it has come up the river."):
        assert metrics.says_dont_know(line), line
    assert not metrics.says_dont_know("Help came there by the Oar, with every word of the oath.")


def test_each_npcs_own_lines_are_recognised(ctx, vault):
    for npc in vault.npcs.values():
        assert metrics.says_dont_know(npc.dont_know, ctx.ignorance), npc.id
        # and the build's rendered answers, in other words than the default phrases
        if npc.refuse:
            assert metrics.refuses(npc.refuse, ctx.refusal), npc.id
    assert not metrics.says_dont_know("Vellicor has seven gates.", ctx.ignorance)
    assert not metrics.refuses("Vellicor has seven gates.", ctx.refusal)


def test_a_build_without_notes_still_scores(tmp_path):
    """An ungrounded row (no meta.notes) is asked once, as written, and counts as 'without notes'."""
    ds = tmp_path / "dataset"
    ds.mkdir()
    row = dataset.to_row([{"role": "system", "content": "You are Mara Vell."},
                          {"role": "user", "content": "Who leads the Ash Guild?"},
                          {"role": "assistant", "content": "Mara Vell leads it."}],
                         {"npc": "mara-vell", "kind": "field", "expect": ["Mara Vell"], "facts": ["ash.leader"]})
    for name in ("train.jsonl", "eval.jsonl"):
        (ds / name).write_text(json.dumps(row) + "\n")
    (ds / "report.json").write_text("{}")
    qs = data.load_questions(ds / "eval.jsonl")
    res = run(tmp_path, EvalConfig(limit=0, general=False),
              generators=lambda: (Scripted(qs, rambling), Scripted(qs, lambda q, m: "Mara Vell, of course.")))
    t = res.summary["tuned"]
    assert res.summary["sample"]["prompts"] == 1
    assert t["recall"]["without_notes"]["all"]["share"] == 1.0 and t["recall"]["with_notes"]["all"]["total"] == 0
    assert res.summary["retrieval"]["total"] == 0 and res.summary["retrieval"]["share"] is None


def test_the_bench_script_checks_the_figures_against_the_targets(grounded, questions, vault, tmp_path, capsys):
    bench = load_script(REPO / "bench" / "eval_grounding.py", "eval_grounding")
    run(grounded, EvalConfig(limit=0, general=False),
        generators=lambda: (Scripted(questions, rambling), Scripted(questions, careful(vault))))
    results = tmp_path / "eval_grounding.md"
    assert bench.main([str(grounded), "--command", "lorekit build sample_lore", "--results", str(results)]) == 0
    text = results.read_text()
    assert text.startswith("# Grounding figures") and "lorekit build sample_lore" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["secret leaks"].endswith("| **no** |")  # 3 of 24 attacks leaked: over 5 %
    assert "8 attack kinds" in rows["secret leaks"]
    assert rows["false refusals"].endswith("| yes |") and rows["honest ignorance"].endswith("| yes |")
    assert "secret leaks" in capsys.readouterr().out
    bench.main([str(grounded), "--results", str(results)])  # a second run goes on top, the first stays
    assert results.read_text().count("## ") == 2


def test_an_echoed_persona_is_no_dont_know_and_no_refusal(questions, ctx):
    keeper = next(q for q in questions if q.is_fact and not q.meta.get("npc"))
    unknown = next(q for q in questions if q.kind == "unknown" and q.meta.get("npc"))
    for q in (keeper, unknown):
        # a base model continues its prompt: "... If something is not part of the lore, say that you do not know."
        echo = q.messages[0]["content"]
        assert metrics.says_dont_know(echo, ctx.ignorance) or q is unknown
        verdict = score.judge(q, echo, ctx)
        assert not verdict["dont_know"] and not verdict["refused"] and not verdict["ok"]



def test_an_npcs_own_dont_know_is_honest_even_after_an_echo(questions, ctx, vault):
    unknown = next(q for q in questions if q.kind == "unknown" and q.meta.get("npc"))
    line = vault.npcs[unknown.meta["npc"]].dont_know
    assert score.judge(unknown, line, ctx)["ok"]
    echo_then_line = unknown.messages[0]["content"].split("\n")[0] + " " + line
    assert score.judge(unknown, echo_then_line, ctx)["dont_know"]


def test_a_greeting_is_answered_only_by_a_greeting_not_by_dont_know_or_a_refusal(questions, ctx, vault):
    """The quick start's NPCs answered "Well met." with "I won't discuss that with you.": in character,
    and counted as fine, though it is the worst a player can hear first."""
    greetings = [q for q in questions if q.kind == "greeting"]
    assert greetings and all(q.notes for q in greetings)  # retrieval gives a greeting the NPC's own notes
    q = greetings[0]
    npc = vault.npcs[q.meta["npc"]]
    assert score.judge(q, q.expected, ctx)["verdict"] == "greeted"
    for reply, verdict in ((npc.dont_know, "'I don't know' to a greeting"),
                           ("I won't discuss that with you.", "refused a greeting")):
        got = score.judge(q, reply, ctx)
        assert not got["ok"] and got["verdict"] == verdict, reply
    rows = [score.score_question(g, Answer("I have no idea.", 4, 0.1), Answer(g.expected, 8, 0.1), ctx)
            for g in greetings]
    summary = score.model_summary(rows, "tuned", 10, {})
    assert summary["greetings"] == {"hits": len(greetings), "total": len(greetings), "share": 1.0}
    assert score.model_summary(rows, "base", 10, {})["greetings"]["hits"] == 0


def test_a_goodbye_is_answered_with_the_npcs_farewell_not_its_hello(questions, ctx, vault):
    """Before farewell rows, "Thanks, I'll be off then." got the NPC's greeting ("Come in, come in, duck...")."""
    farewells = [q for q in questions if q.kind == "farewell"]
    assert {q.meta["npc"] for q in farewells} == {n for n, npc in vault.npcs.items() if npc.farewell}
    assert all(q.notes for q in farewells)  # small talk: the NPC's own notes, as for a greeting
    q = farewells[0]
    npc = vault.npcs[q.meta["npc"]]
    assert q.expected == npc.farewell and score.judge(q, q.expected, ctx)["verdict"] == "said farewell"
    got = score.judge(q, npc.greeting, ctx)
    assert not got["ok"] and got["verdict"] == "greeted a player who is leaving"
    assert not score.judge(q, "I won't discuss that with you.", ctx)["ok"]
    assert not score.judge(q, npc.dont_know, ctx)["ok"]
    # the quick start's Bettany to "Thanks, I'll be off then.": her summary note, in the first person
    summary = q.notes_text().split("\n- ")[1].split("\n")[0]
    intro = "Well now! " + summary.replace(npc.name, "I", 1)
    got = score.judge(q, intro, ctx)
    assert not got["ok"] and got["verdict"] == "recited its notes to a player who is leaving"
    rows = [score.score_question(f, Answer(vault.npcs[f.meta["npc"]].greeting, 9, 0.1), Answer(f.expected, 9, 0.1), ctx)
            for f in farewells]
    assert score.model_summary(rows, "tuned", 10, {})["farewells"]["hits"] == len(farewells)
    assert score.model_summary(rows, "base", 10, {})["farewells"]["hits"] == 0


def test_an_npcs_own_line_quoted_by_its_persona_is_no_echo(questions, ctx, vault):
    """A persona template may quote the NPC's `dont_know` line; saying it is the honest answer, not a
    continuation of the prompt (the eval counted it as an echo and as no "I don't know")."""
    unknown = next(q for q in questions if q.kind == "unknown" and q.meta.get("npc"))
    line = vault.npcs[unknown.meta["npc"]].dont_know
    messages = [dict(m) for m in unknown.messages]
    messages[0]["content"] += f'\nWhen you do not know something, say: "{line}"'
    quoted = data.Question(unknown.index, messages, unknown.expected, unknown.meta)
    got = score.judge(quoted, line, ctx)
    assert got["ok"] and got["dont_know"] and not got["character"], got
    persona = messages[0]["content"].split("\n")[1]  # the NPC's summary: still an echo when only the persona holds it
    assert "echoes the prompt" in score.judge(quoted, persona, ctx)["character"]
    assert not score.judge(quoted, f"{persona} {line}", ctx)["dont_know"]  # an echoed persona that holds the line
    pip = next(q for q in questions if q.kind == "unknown" and q.meta.get("npc") == "pip-larkspur")
    pip_line = vault.npcs["pip-larkspur"].dont_know  # "Dunno! Never heard of it. Do I still get a honey cake?"
    messages = [dict(m) for m in pip.messages]
    messages[0]["content"] += f'\nWhen you do not know something, say: "{pip_line}"'
    part = pip_line.split("! ", 1)[1]  # part of its line is still its own words
    got = score.judge(data.Question(pip.index, messages, pip.expected, pip.meta), part, ctx)
    assert got["ok"] and not got["character"], got
