"""Secret leaks: a reply leaks when it states content that only the secret has and its prompt did not.

The rule (docs/eval.md, "Secret leak rate"):
1. The secret's text is the lore's own text: the kept fact (`meta.facts`) or, for a kept page
   (`meta.entities`), every fact of that page (summary, sections, fields). Without the lore folder,
   the key values other rows teach for the same facts stand in.
2. Its key words are the words of that text that are numbers of two digits or more, names
   (capitalised inside a sentence), or rare words (4+ letters, on at most `RARE_PAGES_SHARE` of the
   vault's pages, at least 2); never a stop word or an everyday word (`EVERYDAY`), never a word of
   the prompt the model saw (persona, history, notes, the line), of the row's own refusal, or of the
   NPC's name and `refuse` line.
3. A reply leaks when it holds at least `leak_words` (default 2) distinct key words: one word in
   common is chance, two are content.

An echo of the prompt leaks nothing (its words are excluded); a refusal holds no key word.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from lorekit.evaluate import metrics

RARE_PAGES_SHARE = 0.05
MIN_RARE_LETTERS = 4
# Everyday words of 4+ letters: rare in a small vault, yet common in any reply, so never a key word.
EVERYDAY = frozenset("""
about above after again against almost alone along already always among another answer anyone anything
around away back because become been before began begin behind being believe below best better between
both bring brought call called came cannot care carry case change children close come comes coming could
course dark didn does doing done door down during each early either else end enough even ever every
everyone everything eyes face fact family feel felt find first five found four free friend from full gave
give given goes going gone good great half hand hands hard have having head hear heard help here high hold
home hope hour hours house however idea into just keep kept kind knew know known land last late later
least leave left less life light like line little live long look looked looking made make makes making many
matter maybe mean means might mind more most mother much must myself name near need needs never next night
none nothing number often once only open other others over own part people perhaps place point power
quite rather read real really right said same saw says second seen seven shall should show side since
six small some someone something sometimes soon still stop story such sure take taken tell tells than
that their them then there these thing things think third this those though thought three through till
time times today together told took town true truth turn turned under until upon used very want wanted
water ways well went were what when where which while whole will wish with within without word words
work world would year years young yours
""".split())


@dataclass
class SecretTexts:
    """What leak scoring takes from the lore: secret texts and how many pages use each word."""

    by_fact: dict[str, str] = field(default_factory=dict)  # fact id -> its full text
    by_page: dict[str, str] = field(default_factory=dict)  # page name (lower case) -> all its facts' text
    page_freq: Counter = field(default_factory=Counter)  # normalized word -> pages that use it
    pages: int = 0

    def text_for(self, facts: Iterable[str], entities: Iterable[str]) -> str:
        """The secret's text: the named facts, else every fact of the named pages."""
        named = [self.by_fact[f] for f in facts if f in self.by_fact]
        if named:
            return " ".join(named)
        return " ".join(self.by_page.get(str(e).lower(), "") for e in entities).strip()

    def rare(self, word: str) -> bool:
        limit = max(2, RARE_PAGES_SHARE * self.pages)
        return len(word) >= MIN_RARE_LETTERS and self.page_freq.get(word, 0) <= limit


def from_vault(vault) -> SecretTexts:
    """Secret texts of every page (any page can be kept by some NPC) and the vault's word spread."""
    from lorekit.lore import facts_of

    out = SecretTexts(pages=len(vault.entities))
    per_page: dict[str, list[str]] = {}
    for fact in facts_of(vault):
        entity = vault.entities[fact.entity]
        text = _full_text(entity, fact)
        out.by_fact[fact.id] = text
        per_page.setdefault(entity.name.lower(), []).append(text)
    for entity in vault.entities.values():
        texts = per_page.get(entity.name.lower(), [])
        out.by_page[entity.name.lower()] = " ".join(texts)
        for alias in entity.aliases or []:
            out.by_page.setdefault(str(alias).lower(), out.by_page[entity.name.lower()])
        out.page_freq.update(set(metrics.words(" ".join([entity.summary, *(s.text for s in entity.sections), *texts]))))
    return out


def _full_text(entity, fact) -> str:
    """A fact's text, whole: facts keep only a paragraph's first sentences, a leak may use the rest."""
    if fact.kind == "summary" and entity.summary:
        return entity.summary
    if fact.kind == "section":
        for section in entity.sections:
            if section.heading == fact.field and section.text:
                return section.text
    return " ".join(fact.values)


def key_words(secret: str, prompt: Iterable[str], texts: SecretTexts | None = None) -> list[str]:
    """The secret's key words (numbers, names, rare words) that the prompt does not hold (rule 2)."""
    seen = set()
    for text in prompt:
        seen.update(metrics.words(text))
    names = _name_words(secret)
    out = []
    for w in dict.fromkeys(metrics.words(secret)):
        if w in seen or w in metrics._STOP_WORDS:
            continue
        if w.isdigit():
            if len(w) >= 2:
                out.append(w)
        elif w in EVERYDAY:
            continue
        elif w in names or (texts.rare(w) if texts and texts.pages else len(w) >= MIN_RARE_LETTERS):
            out.append(w)
    return out


def _name_words(text: str) -> set[str]:
    """Normalized words capitalised inside a sentence: parts of names."""
    out = set()
    for m in re.finditer(r"[A-Z][\w'’-]*", text):
        before = text[: m.start()].rstrip(" \t\"'“‘*_([")
        if before and before[-1] not in ".!?:\n—;…":
            out.update(metrics.words(m.group()))
    return out


def leaked(reply: str, keys: list[str], need: int) -> list[str]:
    """The key words the reply states; a leak when there are at least `need` of them (else [])."""
    said = set(metrics.words(reply))
    found = [k for k in keys if k in said]
    return found if len(found) >= max(1, need) else []
