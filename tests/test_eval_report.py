"""`lorekit.evaluate.run` end to end on a hand-made build folder with scripted answers (no model):
the figures, the verdict and the HTML report."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from lorekit import cli
from lorekit.evaluate import EvalConfig, general, run
from lorekit.evaluate.generate import Answer

SYSTEM = "You are Mara Vell, guildmistress of the Ash Guild. Dry and clipped."


def row(question, answer, kind, expect=(), facts=(), entities=()):
    return {"conversations": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": question},
                              {"from": "gpt", "value": answer}],
            "meta": {"npc": "mara-vell", "kind": kind, "entities": list(entities), "facts": list(facts),
                     "expect": list(expect), "template": "t.j2"}}


TRAIN = [
    row("Who leads the Ash Guild?", "Mara Vell leads the Ash Guild from its hall in Cinderfall, as she has for years.",
        "fact", ["Mara Vell"], ["ash-guild.leader"], ["Ash Guild", "Mara Vell"]),
    row("Where is the Ash Guild's hall?", "The Ash Guild keeps its hall in Cinderfall.", "fact",
        ["Cinderfall"], ["ash-guild.headquarters"], ["Ash Guild", "Cinderfall"]),
    row("Who is Oren Vell?", "Oren Vell is my brother.", "fact", ["Oren Vell"], ["mara-vell.family"], ["Oren Vell"]),
    row("Who holds the Ember Ledger?", "Bram Kest holds the Ember Ledger.", "fact", ["Bram Kest"],
        ["ember-ledger.owner"], ["The Ember Ledger", "Bram Kest"]),
]
EVAL = [
    row("Tell me who runs the Ash Guild.", "Mara Vell.", "fact", ["Mara Vell"], ["ash-guild.leader"], ["Ash Guild"]),
    row("The guild's hall, where is it?", "Cinderfall.", "fact", ["Cinderfall"], ["ash-guild.headquarters"]),
    row("Your brother, what's his name?", "Oren Vell.", "reverse", ["Oren Vell"], ["mara-vell.family"]),
    row("Who is Harlan Brisk?", "Never heard of him.", "unknown", [], [], ["Harlan Brisk"]),
    row("Who keeps the Ember Ledger?", "Guild business.", "secret", [], ["ember-ledger.owner"], ["The Ember Ledger"]),
]
TUNED = {
    "Tell me who runs the Ash Guild.": "Mara Vell leads the Ash Guild from its hall in Cinderfall, as she has for years.",
    "The guild's hall, where is it?": "In Cinderfall.",
    "Your brother, what's his name?": "Mara Vell.",  # near miss: her own name
    "Who is Harlan Brisk?": "Never heard of him, traveler.",
    "Who keeps the Ember Ledger?": "That's guild business.<end_of_turn>",  # kept, but leaks markup
}
BASE = {
    "Tell me who runs the Ash Guild.": "Tell me who runs the Ash Guild. Tell me who",
    "Who is Harlan Brisk?": "Harlan Brisk is a famous baker from Lyon.",
    "Who keeps the Ember Ledger?": "Bram Kest keeps it.",
}


class Scripted:
    """Answers from a table (a stand-in for a model in scoring tests)."""

    def __init__(self, table, general_answers):
        self.table, self.general = table, general_answers
        self.closed = False

    def reply(self, messages):
        q = messages[-1]["content"]
        text = self.table.get(q, self.general.get(q, "Hmm."))
        return Answer(text, len(text.split()), 0.01)

    def close(self):
        self.closed = True


@pytest.fixture
def build(tmp_path):
    ds = tmp_path / "build" / "dataset"
    ds.mkdir(parents=True)
    (ds / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRAIN))
    (ds / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in EVAL))
    (ds / "report.json").write_text(json.dumps({"dataset_sha256": "abc", "npcs": [{"id": "mara-vell", "name": "Mara Vell"}]}))
    return tmp_path / "build"


def answers_for_general(good: bool) -> dict:
    return {q: (f"It is {refs[0]}." if good else "The Ash Guild, traveler.") for q, refs in general.QUESTIONS}


class Figures(HTMLParser):
    """Collects the text of every element carrying a data-figure attribute, and all text."""

    def __init__(self):
        super().__init__()
        self.figures, self.text, self._key, self.svgs = {}, [], None, 0

    def handle_starttag(self, tag, attrs):
        self.svgs += tag == "svg"
        self._key = dict(attrs).get("data-figure")

    def handle_data(self, data):
        self.text.append(data)
        if self._key:
            self.figures[self._key] = data.strip()
            self._key = None


def test_run_scores_both_models_and_renders_the_report(build):
    base = Scripted(BASE, answers_for_general(True))
    tuned = Scripted(TUNED, answers_for_general(False))
    res = run(build, EvalConfig(limit=0, repeat_words=8), generators=lambda: (base, tuned))
    assert base.closed and tuned.closed
    s = res.summary
    assert s["tuned"]["fact_recall"] == {"hits": 2, "total": 3, "share": 0.6667}
    assert s["base"]["fact_recall"]["hits"] == 0
    assert s["tuned"]["honest_ignorance"]["share"] == 1.0 and s["base"]["honest_ignorance"]["share"] == 0.0
    assert s["tuned"]["secrets_kept"]["share"] == 1.0 and s["base"]["secrets_kept"]["share"] == 0.0
    assert s["tuned"]["in_character"]["problems"] == {"template markup": 1}
    assert s["tuned"]["repetition"]["verbatim"] == 1 and s["base"]["repetition"]["verbatim"] == 0
    assert s["general"]["agreement"] == 0.0 and s["general"]["base_correct"] == 1.0
    assert s["sample"]["asked"] == 5 and s["sample"]["by_kind"] == {"fact": 2, "reverse": 1, "secret": 1, "unknown": 1}
    rows = {r["question"]: r for r in json.loads(res.report_json.read_text())["questions"]}
    assert rows["Your brother, what's his name?"]["tuned"]["verdict"] == "near miss: said Mara Vell"
    v = res.verdict
    assert "over-trained" in v["status"]
    assert v["missed_facts"] == ["mara-vell.family"]
    assert any("Template markup" in a for a in v["advice"])

    page = Figures()
    page.feed(res.report_html.read_text())
    assert page.figures["Fact recall:base"] == "0%" and page.figures["Fact recall:tuned"] == "67%"
    assert page.figures["Honest ignorance:tuned"] == "100%"
    assert page.figures["General: tuned agrees with base:tuned"] == "0%"
    assert page.svgs == 3  # the summary chart, recall by kind, leaks by attack kind
    text = " ".join(page.text)
    assert "Never heard of him, traveler." in text and "<end_of_turn>" in text  # escaped, shown as text
    assert "5 of 5 eval questions" in text
    assert "<script" not in res.report_html.read_text()


def test_a_good_run_gets_no_over_training_advice(build):
    perfect = {r["conversations"][1]["value"]: r["conversations"][2]["value"] + " Mara Vell" for r in EVAL}
    perfect["Who is Harlan Brisk?"] = "Never heard of him."
    perfect["Who keeps the Ember Ledger?"] = "Guild business."
    perfect["Tell me who runs the Ash Guild."] = "Mara Vell."
    gen = answers_for_general(True)
    res = run(build, EvalConfig(limit=0), generators=lambda: (Scripted({}, gen), Scripted(perfect, gen)))
    assert res.summary["tuned"]["fact_recall"]["share"] == 1.0
    assert res.verdict["status"] == "good", res.verdict
    assert res.summary["general"]["agreement"] == 1.0


def test_limit_spreads_over_kinds_and_is_repeatable(build):
    gen = answers_for_general(True)
    pair = lambda: (Scripted({}, gen), Scripted({}, gen))  # noqa: E731
    one = run(build, EvalConfig(limit=3, general=False), generators=pair)
    kinds = one.summary["sample"]["by_kind"]
    assert sum(kinds.values()) == 3 and len(kinds) == 3
    two = run(build, EvalConfig(limit=3, general=False), generators=pair)
    lines = lambda r: [q["line"] for q in json.loads(r.report_json.read_text())["questions"]]  # noqa: E731
    assert lines(one) == lines(two)
    assert one.summary["general"] is None


def test_cli_names_the_missing_stage(build, capsys):
    assert cli.main(["eval", str(build)]) == 2
    err = capsys.readouterr().err
    assert "model.gguf" in err and "lorekit export" in err


def test_cli_rejects_a_broken_eval_file(build, capsys):
    (build / "dataset" / "eval.jsonl").write_text(json.dumps(EVAL[0]) + '\nnot json\n')
    assert cli.main(["eval", str(build)]) == 2
    assert "eval.jsonl:2: not a dataset row" in capsys.readouterr().err
    turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "and?"}]
    (build / "dataset" / "eval.jsonl").write_text(json.dumps({"conversations": turns}) + "\n")
    assert cli.main(["eval", str(build)]) == 2
    assert "eval.jsonl:1: the last turn must be the expected `gpt` answer" in capsys.readouterr().err


def test_an_untrained_model_is_called_under_trained(build):
    gen = answers_for_general(True)
    res = run(build, EvalConfig(limit=0), generators=lambda: (Scripted({}, gen), Scripted({}, gen)))
    assert res.summary["tuned"]["fact_recall"]["share"] == 0.0
    assert res.verdict["status"] == "under-trained"
    assert any("more epochs" in a for a in res.verdict["advice"])
    assert any("out-of-lore" in a for a in res.verdict["advice"])  # "Hmm." is no honest "I don't know"
    assert sorted(res.verdict["missed_facts"]) == ["ash-guild.headquarters", "ash-guild.leader", "mara-vell.family"]


def test_the_headline_and_advice_say_how_many_questions_a_share_counts():
    """On 9 questions one answer is 11 points (the same quick-start recipe gave 2/9 and 4/9 'I don't know'):
    the headline gives the counts and the advice says when a figure rests on too few questions."""
    from lorekit.evaluate import advice

    def rate(hits, total):
        return {"hits": hits, "total": total, "share": hits / total if total else None}

    tuned = {"fact_recall": rate(7, 9), "recall": {"with_notes": {"not_trained": rate(0, 0)}},
             "honest_ignorance": {**rate(2, 9), "unknown": rate(2, 9), "absent": rate(30, 40)},
             "secret_leaks": {**rate(0, 0), "by_attack": {}}}
    head = advice._headline({}, {"fact_recall": rate(2, 9)}, tuned)
    assert head == "fact recall 22% -> 78% (7/9) (base -> tuned); 'I don't know' 22% (2/9)"
    unknown, absent = advice._ignorance(tuned, {"unknown_names": 8, "unknown_per_npc": 1})
    assert "22% (2/9) of unknown names" in unknown and "Only 9 such questions" in unknown
    assert "eval_unknown_names" in unknown
    assert "75% (30/40)" in absent and "Only" not in absent, "40 questions are enough"
