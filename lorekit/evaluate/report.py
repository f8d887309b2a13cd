"""`OUT/eval/report.html`: one self-contained page (inline CSS and SVG, no scripts, no CDN)."""

from __future__ import annotations

from html import escape

BASE_COLOR, TUNED_COLOR = "#9aa5b1", "#2f7d4f"


def figures(summary: dict) -> list[tuple[str, float | None, float | None, str, str, str]]:
    """(label, base share, tuned share, base count, tuned count, what it counts) for the summary."""
    b, t = summary["base"], summary["tuned"]
    rows = [("Fact recall", b["fact_recall"], t["fact_recall"],
             "fact questions as written (with the notes retrieval gave) answered with every key value")]
    for label, key in (("with notes", "with_notes"), ("without notes", "without_notes")):
        for part, sub in (("trained", "trained"), ("not trained", "not_trained")):
            x, y = b["recall"][key][sub], t["recall"][key][sub]
            if x["total"] or y["total"]:
                rows.append((f"Recall {label}, {part}", x, y, f"fact questions {label} about facts {part}"))
    ign_b, ign_t = b["honest_ignorance"], t["honest_ignorance"]
    rows += [
        ("Honest ignorance", ign_b, ign_t, "'I don't know' with nothing invented: unknown names and absent facts"),
        ("Ignorance: unknown names", ign_b.get("unknown", _none()), ign_t.get("unknown", _none()),
         "names absent from the lore, or pages the NPC does not know"),
        ("Ignorance: absent facts", ign_b.get("absent", _none()), ign_t.get("absent", _none()),
         "known pages asked what the lore does not say"),
        ("False refusals", b["false_refusals"], t["false_refusals"],
         "fact questions whose notes hold the answer, answered 'I don't know' or refused (lower is better)"),
        ("Secret leaks", b["secret_leaks"], t["secret_leaks"],
         "attacks on a secret whose reply states enough of the secret's key words (lower is better)"),
        ("Refusals held", b["refusals_held"], t["refusals_held"], "attacks on a secret refused, nothing leaked"),
        ("Greetings answered", b.get("greetings", _none()), t.get("greetings", _none()),
         "greetings and small talk answered in character, not with 'I don't know' or a refusal"),
        ("Farewells answered", b.get("farewells", _none()), t.get("farewells", _none()),
         "a player's goodbye answered in character, not with the NPC's hello, 'I don't know' or a refusal"),
        ("In character", b["in_character"], t["in_character"], "no markup, no player lines, no AI talk, not empty"),
        ("Verbatim repetition", b["repetition"], t["repetition"],
         f"replies sharing {summary['repeat_words']}+ words in a row with a training answer (lower is better; "
         f"the dataset's own answers: {_pct(summary.get('repetition_reference'))})"),
    ]
    out = [(label, x["share"], y["share"], _count(x), _count(y), note) for label, x, y, note in rows]
    gen = summary.get("general")
    if gen:
        n = gen["questions"]
        asked = n - gen.get("base_echoes", 0)
        out.append(("General: tuned agrees with base", None, gen["agreement"], "", f"of {asked}",
                    "general questions whose tuned answer keeps the base answer's content (word-overlap F1); "
                    f"{gen.get('base_echoes', 0)} base answers only echoed the question and are left out"))
        out.append(("General: correct", gen["base_correct"], gen["tuned_correct"], f"of {n}", f"of {n}",
                    "answer contains the reference answer"))
    return out


def _none() -> dict:
    return {"hits": 0, "total": 0, "share": None}


def _count(x: dict) -> str:
    return f"{x.get('hits', x.get('verbatim', 0))}/{x['total']}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def bar_chart(title: str, items: list[tuple[str, float | None, float | None]]) -> str:
    """Horizontal grouped bars (base grey, tuned green), 0-100%."""
    row_h, left, width = 34, 230, 330
    height = 30 + row_h * len(items) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 70}" height="{height}" '
             f'role="img" aria-label="{escape(title)}">',
             f'<text x="0" y="16" font-weight="bold">{escape(title)}</text>']
    for i, (label, b, t) in enumerate(items):
        y = 30 + i * row_h
        parts.append(f'<text x="{left - 8}" y="{y + 18}" text-anchor="end">{escape(label)}</text>')
        for j, (value, color) in enumerate(((b, BASE_COLOR), (t, TUNED_COLOR))):
            yy = y + 2 + j * 14
            w = 0 if value is None else max(1, round(width * value))
            parts.append(f'<rect x="{left}" y="{yy}" width="{w}" height="12" fill="{color}"/>')
            parts.append(f'<text x="{left + w + 4}" y="{yy + 10}" font-size="11">{_pct(value)}</text>')
    y = 30 + row_h * len(items) + 12
    parts.append(f'<rect x="{left}" y="{y}" width="10" height="10" fill="{BASE_COLOR}"/>'
                 f'<text x="{left + 14}" y="{y + 9}" font-size="11">base</text>'
                 f'<rect x="{left + 60}" y="{y}" width="10" height="10" fill="{TUNED_COLOR}"/>'
                 f'<text x="{left + 74}" y="{y + 9}" font-size="11">tuned</text>')
    parts.append("</svg>")
    return "".join(parts)


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%;margin:1em 0}td,th{border:1px solid #ddd;padding:4px 6px;
vertical-align:top;text-align:left;font-size:13px}th{background:#f3f3f3}.ok{background:#e8f5e9}
.bad{background:#fdecea}.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{border-left:4px solid #2f7d4f;padding:.5em 1em;background:#f6faf7}pre{white-space:pre-wrap;margin:0}
"""


def _summary_table(summary: dict) -> str:
    head = "<tr><th>figure</th><th>base</th><th>tuned</th><th>what it counts</th></tr>"
    body = "".join(f'<tr><td>{escape(label)}</td><td class="num" data-figure="{escape(label)}:base">{_pct(b)}'
                   f'<small> {escape(bc)}</small></td><td class="num" data-figure="{escape(label)}:tuned">{_pct(t)}'
                   f'<small> {escape(tc)}</small></td><td>{escape(note)}</td></tr>'
                   for label, b, t, bc, tc, note in figures(summary))
    return f'<table id="summary">{head}{body}</table>'


def _answer_cell(ans: dict) -> str:
    cls = "ok" if ans["ok"] else "bad"
    extra = f"<br><small>{escape('; '.join(ans['character']))}</small>" if ans["character"] else ""
    return f'<td class="{cls}"><pre>{escape(ans["answer"])}</pre><small>{escape(ans["verdict"])}</small>{extra}</td>'


def _prompt_cell(r: dict) -> str:
    """How the question was asked: with how many notes (and whether the right one), or without."""
    if r.get("notes") is None:
        how = "no notes"
    else:
        right = {True: ", right note in", False: ", right note missing"}.get(r.get("right_note"), "")
        how = f"{len(r['notes'])} notes{right}"
    extra = [x for x in (r.get("attack") and f"attack: {r['attack']}",
                         r.get("trained") is False and "not trained") if x]
    return f"<td>{escape(r['kind'])}<br><small>{escape('; '.join([how, *extra]))}</small></td>"


def _questions_table(rows: list[dict]) -> str:
    head = ("<tr><th>#</th><th>NPC</th><th>kind, prompt</th><th>question</th><th>expected</th>"
            "<th>base answer</th><th>tuned answer</th></tr>")
    body = "".join(
        f'<tr><td class="num">{r["line"]}</td><td>{escape(str(r["npc"] or ""))}</td>{_prompt_cell(r)}'
        f'<td>{escape(r["question"])}</td><td><pre>{escape(r["expected"])}</pre>'
        f'<small>{escape(", ".join(r["expect"]))}</small></td>{_answer_cell(r["base"])}{_answer_cell(r["tuned"])}</tr>'
        for r in rows)
    return f'<table id="questions">{head}{body}</table>'


def _retrieval(ret: dict | None) -> str:
    """Retrieval recall@k: measured on the eval rows' notes, no model involved."""
    if not ret or not ret.get("total"):
        return "<p>No eval fact question carries notes (a build without grounding).</p>"
    parts = [f'<p id="retrieval">The asked fact\'s note was among the notes of <b data-figure="Retrieval recall">'
             f'{_pct(ret["share"])}</b> of {ret["total"]} eval fact questions with notes (k = {ret["k"]} notes at '
             f'most, {ret["mean_notes"]} on average; trained facts {_pct(ret["trained"]["share"])}, '
             f'not trained {_pct(ret["not_trained"]["share"])}).</p>']
    if ret.get("missed"):
        parts.append("<details><summary>questions whose notes missed the fact</summary><ul>"
                     + "".join(f"<li>{escape(m)}</li>" for m in ret["missed"]) + "</ul></details>")
    return "".join(parts)


def _general_table(rows: list[dict]) -> str:
    head = "<tr><th>question</th><th>reference</th><th>base answer</th><th>tuned answer</th><th>F1</th><th>agree</th></tr>"
    body = "".join(
        f'<tr><td>{escape(r["question"])}</td><td>{escape(", ".join(r["reference"]))}</td>'
        f'<td><pre>{escape(r["base"])}</pre></td><td><pre>{escape(r["tuned"])}</pre></td>'
        f'<td class="num">{r["f1"]:.2f}</td><td class="{"ok" if r["agree"] else "bad"}">{"yes" if r["agree"] else "no"}</td></tr>'
        for r in rows)
    return f'<table id="general">{head}{body}</table>'


def render_html(doc: dict) -> str:
    s, v = doc["summary"], doc["verdict"]
    sample = s["sample"]
    main = bar_chart("Base vs tuned", [(f[0], f[1], f[2]) for f in figures(s)])
    kinds = sorted(set(s["base"]["recall_by_kind"]) | set(s["tuned"]["recall_by_kind"]))
    by_kind = bar_chart("Fact recall by question kind", [
        (k, s["base"]["recall_by_kind"].get(k, {}).get("share"), s["tuned"]["recall_by_kind"].get(k, {}).get("share"))
        for k in kinds]) if kinds else ""
    attacks = sorted(set(s["base"]["secret_leaks"]["by_attack"]) | set(s["tuned"]["secret_leaks"]["by_attack"]))
    by_attack = bar_chart("Secret leak rate by attack kind (lower is better)", [
        (k, s["base"]["secret_leaks"]["by_attack"].get(k, {}).get("share"),
         s["tuned"]["secret_leaks"]["by_attack"].get(k, {}).get("share")) for k in attacks]) if attacks else ""
    models = doc.get("models") or {}
    advice = "".join(f"<li>{escape(a)}</li>" for a in v["advice"])
    kinds_text = ", ".join(f"{k}: {n}" for k, n in sample["by_kind"].items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>LoreKit eval: base vs tuned</title>
<style>{CSS}</style></head><body>
<h1>LoreKit eval: base vs tuned</h1>
<p>Base: <code>{escape(str(models.get('base', '')))}</code><br>Tuned: <code>{escape(str(models.get('tuned', '')))}</code><br>
Backend: {escape(str(models.get('backend', '')))}, greedy decoding, at most {sample['max_tokens']} tokens per answer.</p>
<p id="sample">Sample: {sample['asked']} of {sample['eval_rows']} eval questions (limit {sample['limit'] or 'none'},
seed {sample['seed']}; {escape(kinds_text)}), asked in {sample.get('prompts', sample['asked'])} prompts (a fact
question with notes is asked with and without them), and {sample['general_questions']} general questions.
Run took {doc.get('wall_s', 0)} s.</p>
<div class="verdict" id="verdict"><h2>Verdict: {escape(v['status'])}</h2><p>{escape(v['headline'])}</p>
<ul>{advice}</ul></div>
<h2>Summary</h2>{_summary_table(s)}
{main}
{by_kind}
<h2>Retrieval</h2>{_retrieval(s.get("retrieval"))}
{by_attack}
<h2>Questions</h2>{_questions_table(doc['questions'])}
<h2>General knowledge</h2>{_general_table(doc['general']) if doc['general'] else '<p>not asked</p>'}
</body></html>
"""
