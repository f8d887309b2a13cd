"""Jinja templates for questions, answers and personas: sandboxed, strict, seeded.

A template file has a `questions` block (one phrasing per line) and an `answer` block. Templates in
the vault's `_templates/` folder override or add to the defaults in the repository's `templates/`.
Randomness comes only from `pick(...)`, seeded per row, so two compiles are byte-identical.
"""

from __future__ import annotations

import hashlib
import random
import re
import traceback
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lorekit.lore.article import Article

CHECKOUT_DIR = Path(__file__).resolve().parent.parent.parent / "templates"
# Raise when a filter below renders other text for the same template (the cache then renders again).
FILTERS_VERSION = 2  # 2: first person, "(that is me)", comma openers, plural groups, battles


def default_dir() -> Path:
    """The default templates: shipped in the wheel as `lorekit/_templates/` (pyproject maps the
    repository's `templates/` there), else the checkout's `templates/` (a clone or `pip install -e .`)."""
    from importlib.resources import files

    shipped = Path(str(files("lorekit") / "_templates"))
    return shipped if (shipped / "persona.j2").is_file() else CHECKOUT_DIR


DEFAULT_DIR = default_dir()
OVERRIDE_DIR = "_templates"
_MISSING_RE = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined|no item named '([^']+)'")


class TemplateFailure(Exception):
    """A template could not be rendered: where in the template, and what was missing."""

    def __init__(self, template: str, line: int | None, message: str, missing: str | None = None):
        super().__init__(message)
        self.template, self.line, self.message, self.missing = template, line, message, missing


def and_list(values: Any) -> str:
    """`["A", "B", "C"]` -> "A, B and C"."""
    items = [str(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def possessive(name: Any) -> str:
    """"Mara Vell" -> "Mara Vell's", "Silas" -> "Silas'"."""
    name = str(name)
    return name + ("'" if name.endswith("s") else "'s")


def article(text: Any) -> str:
    """"smuggler" -> "a smuggler", "inn" -> "an inn"; left alone when it already has one or is a name."""
    text = str(text).strip()
    first = text.split(" ", 1)[0].lower()
    if not text or first in ("a", "an", "the", "one", "two", "three") or text[0].isupper() or text[0].isdigit():
        return text
    return ("an " if text[0].lower() in "aeiou" else "a ") + text


_DATE_IN = {"spring", "summer", "autumn", "fall", "winter", "the", "year", "early", "late", "mid", "january",
            "february", "march", "april", "may", "june", "july", "august", "september", "october",
            "november", "december"}


def in_date(text: Any) -> str:
    """"1190 AT" -> "in 1190 AT", "spring of 1341" -> "in spring of 1341"; "around 1338 AT" and
    "in 1190" stay as they are (only bare years, dates and seasons get the preposition)."""
    text = str(text).strip()
    first = text.split(" ", 1)[0].lower().rstrip(",")
    return f"in {text}" if text and (text[0].isdigit() or first in _DATE_IN) else text


_NOUNS = {"character": "person", "location": "place", "faction": "group", "item": "thing", "event": "event"}


def type_noun(etype: Any) -> str:
    """An entity type as a plain noun for questions: location -> "place", lore -> "thing"."""
    return _NOUNS.get(str(etype), "thing")


# the last word of a group's name before any "of", when it is a plural: "The Oarsmen", "Tide Wardens",
# "The Sons of the Sea". Only factions (groups of people) are read this way; a place, item or event
# named with a final s is one thing ("Brinewick Docks is"), and so is "The Ebbwatch" or "House Marr"
_PLURAL_HEADS = ("children", "people", "folk", "kin", "brethren")
_SINGULAR_S = ("ss", "us", "is", "news", "chaos", "atlas", "aegis")


def plural(subject: Any, etype: Any = None) -> bool:
    """Whether a page's name is a plural and takes "are": `subject` is an entity view (name, type) or a
    name with `etype`. Front matter has no field for it, so this is a heuristic (see _PLURAL_HEADS)."""
    if isinstance(subject, dict) or hasattr(subject, "get"):
        subject, etype = subject.get("name", ""), subject.get("type", "")
    if str(etype) != "faction":
        return False
    head = re.sub(r"^the\s+", "", str(subject).strip(), flags=re.IGNORECASE).split(" of ", 1)[0].split()
    word = head[-1].lower() if head else ""
    if word in _PLURAL_HEADS or (word.endswith("men") and word not in ("omen", "amen")):
        return True
    return len(word) > 3 and word.endswith("s") and not word.endswith(("'s", *_SINGULAR_S))


def agree(verb: Any, subject: Any) -> str:
    """A verb in the number of its subject (an entity view, or true for a plural): `'is'|agree(entity)`
    -> "are" for "The Oarsmen", "is" for "House Marr"; "was" -> "were", "does" -> "do", "leads" -> "lead"."""
    verb = str(verb)
    if not (subject if isinstance(subject, bool) else plural(subject)):
        return verb
    return {"is": "are", "was": "were"}.get(verb) or _first_person_verb(verb)


_FIGHT = re.compile(r"\b(?:battles?|wars?|sieges?|skirmish(?:es)?|raids?|fights?|duels?|assaults?|invasions?|"
                    r"rebellions?|revolts?|uprisings?|clash(?:es)?|mutin(?:y|ies)|ambush(?:es)?|sack|massacres?)\b",
                    re.IGNORECASE)
_FIGHT_FIELDS = ("combatants", "belligerents", "sides", "forces")


def battle(subject: Any) -> bool:
    """Whether an event was a fight, so "Who fought in it?" fits: an entity view whose `kind` or name
    says battle, war, siege, raid... or that has a `combatants`-like field; or a list of event names
    that all say so (a reverse fact's events)."""
    if isinstance(subject, (list, tuple)):
        return bool(subject) and all(_FIGHT.search(str(n)) for n in subject)
    if not hasattr(subject, "get"):
        return bool(_FIGHT.search(str(subject)))
    fields = subject.get("fields") or {}
    return any(f in fields for f in _FIGHT_FIELDS) or bool(_FIGHT.search(f"{fields.get('kind', '')} {subject.get('name', '')}"))


_VERB_S = re.compile(r"^[a-z]+s$")


def _first_person_verb(word: str) -> str:
    """Third person singular -> first person: "is" -> "am", "has" -> "have", "keeps" -> "keep"."""
    low = word.lower()
    fixed = {"is": "am", "has": "have", "does": "do", "goes": "go", "was": "was", "says": "say"}
    if low in fixed:
        return fixed[low]
    if not _VERB_S.match(low) or low.endswith("ss") or len(low) < 3:
        return word
    if low.endswith("ies") and len(low) > 4:  # carries -> carry; lies -> lie
        return word[:-3] + "y"
    if low.endswith(("ches", "shes", "xes", "zes")):
        return word[:-2]
    return word[:-1]


# after a plural noun, "and" + an -s word is a verb only when an object follows ("books and speaks Old
# Ebb"); "hours and hands of crew", "nets and ropes." stay a list of nouns
_OBJECT_START = (r"(?:the|a|an|my|his|her|their|its|our|every|each|all|some|no|any|many|few|one|two|three|four|"
                 r"five|six|seven|eight|nine|ten|\d+|[A-Z]\w*)\b")
_AND_ADVERB = r"(?:(never|also|then|often|always|still|once) )?"
# verbs that take a receiver before the thing given: "sailors bring her gifts" is "bring me gifts". The
# receiver reading needs an article, a number or a plural after "her": "ask her blessing" stays "my blessing"
_GIVE_VERBS = ("bring|brings|brought|give|gives|gave|given|send|sends|sent|offer|offers|offered|pay|pays|paid|"
               "tell|tells|told|owe|owes|owed|teach|teaches|taught|lend|lends|lent|hand|hands|handed|grant|"
               "grants|granted|promise|promises|promised|ask|asks|asked")
_GIVEN = r"(?:a|an|the|some|one|two|three|four|five|six|seven|eight|nine|ten|\d+|[a-z]+s)\b"


def _her_as_receiver(sentence: str) -> str:
    """"bring her gifts" -> "bring me gifts", unless the giver is the speaker ("I give her a coin" is
    someone else) or an "and" joins the verb to a clause of which the speaker is the subject."""
    def swap(m: re.Match) -> str:
        before = sentence[:m.start()]
        if re.search(r"\bI (?:\w+ )?$", before) or (before.endswith("and ") and re.search(r"\bI\b", before)):
            return m.group(0)
        return f"{m.group(1)} me "
    return re.sub(rf"\b({_GIVE_VERBS}) her (?={_GIVEN})", swap, sentence)


def first_person(text: Any, name: Any, about: Any = "") -> str:
    """A page's prose about `name`, as `name` would say it: "Hessa Orrin is the guildmistress ... She has
    commanded ..." -> "I am the guildmistress ... I have commanded ...". Rule-based: the full or first
    name as a subject, sentence-level she/he and her/his before a noun become I/my, "her" after a verb of
    giving becomes "me" ("sailors bring me gifts"); other names and pronouns (which may mean someone
    else) are left alone. `about` (the page's summary) helps to tell
    whether the prose says "she" or "he" of its subject."""
    text, name = str(text), str(name).strip()
    if not name:
        return text
    first = name.split()[0]
    names = "|".join(re.escape(n) for n in dict.fromkeys([name, first]))
    subj = re.search(r"\b(she|he|her|his)\b", f"{about} {text}", re.IGNORECASE)  # how the prose refers to its subject
    pro = {"she": "She", "her": "She", "he": "He", "his": "He"}[subj.group(1).lower()] if subj else None
    poss = {"She": "her", "He": "his"}.get(pro or "", "")
    out = []
    for k, sentence in enumerate(re.split(r"((?<=[.!?])\s+)", text)):  # the spaces between sentences kept as they are
        if k % 2:
            out.append(sentence)
            continue
        sentence = re.sub(rf"\b(?:{names})'s?\b(?!\w)", "my", sentence)
        sentence, subjects = re.subn(rf"\b(?:{names})\s+(\w+)", lambda m: "I " + _first_person_verb(m.group(1)),
                                     sentence)
        if pro:
            sentence, n = re.subn(rf"\b(?:{pro}|{pro.lower()})\s+(\w+)",
                                  lambda m: "I " + _first_person_verb(m.group(1)), sentence)
            subjects += n
            if pro == "She":  # before the possessive rule below would read "her gifts" as "my gifts"
                sentence = _her_as_receiver(sentence)
            sentence = re.sub(rf"\b{poss.capitalize()}\s+(?=[a-z])", "My ", sentence)
            # not before an article: "I give her a coin" is an object, not "my a coin"
            sentence = re.sub(rf"\b{poss}\s+(?=[a-z])(?!(?:in|on|at|to|for|with|from|by|and|or|as|a|an|the)\b)",
                              "my ", sentence)
            sentence = re.sub(rf"\b{'herself' if pro == 'She' else 'himself'}\b", "myself", sentence)
            if pro == "He":  # "him" is unambiguous; "her" may be a possessive and is left alone
                sentence = re.sub(r"\bhim\b", "me", sentence)
        # only where the speaker became the subject: "Sailors bring me gifts and ask ..." is not "I ... ask"
        if subjects:  # "I am the ferryman ..., and has rowed" -> "..., and have rowed"
            # "in 1338 AT and feeds her" -> "and feed her"; a list of nouns stays: "hours and hands of crew"
            # (after a plural), "fish, and eggs." (nothing follows)
            sentence = re.sub(r"(?<=, |[^s,] )and ((?:never|also|then|often|always) )?(\w+)(?! of\b)(?= \w)",
                              lambda m: "and " + (m.group(1) or "") + _first_person_verb(m.group(2)), sentence)
            sentence = re.sub(rf"(?<=s )and {_AND_ADVERB}(\w+s)(?= {_OBJECT_START})",
                              lambda m: "and " + (m.group(1) + " " if m.group(1) else "") + _first_person_verb(m.group(2)),
                              sentence)
        sentence = re.sub(r"(^|[.!?]\s+)my\b", lambda m: m.group(1) + "My", sentence)
        out.append(sentence)
    return "".join(out)


def that_is_me(text: Any, name: Any, names: Any = ()) -> str:
    """The speaker's own name inside a statement about something else, marked as the speaker:
    "The Heron Oar belongs to Tobin Reedy (that is me)." Only the first plain mention (not "Name's"),
    and only the name standing alone: not inside a longer name, one of `names` (the names of the other
    pages the statement speaks of: "Old Tobin Reedy Landing") or one a capitalised word follows ("Tobin
    Reedy Bridge"). A title before it is still the speaker ("Ferryman Tobin Reedy"). A note in brackets
    keeps its place: "Bettany Crumb (guardian; that is me)"."""
    text, name = str(text), str(name or "").strip()
    if not name:
        return text
    longer = [n for n in (names or ()) if name in str(n) and str(n) != name]
    # "The Tobin Reedy" may stand as "the Tobin Reedy" (lorekit.lore.article)
    pats = ["[Tt]he " + re.escape(n[4:]) if n.startswith("The ") else re.escape(n) for n in map(str, longer)]
    inside = [(m.start(), m.end()) for pat in pats for m in re.finditer(rf"\b{pat}\b", text)]
    for m in re.finditer(rf"\b{re.escape(name)}\b(?!'s?\b|\w| \(that is me)( \(([^()]*)\))?", text):
        if re.match(r"[ -][A-Z]", text[m.start() + len(name):]) or any(a <= m.start() < b for a, b in inside):
            continue
        mark = f"{name} ({m.group(2)}; that is me)" if m.group(1) else f"{name} (that is me)"
        return text[:m.start()] + mark + text[m.end():]
    return text


def after_opener(statement: Any, opener: Any, names: Any = (), text: Any = "") -> str:
    """An in-character opener and the statement after it. After an opener that ends in a comma ("Well
    now,") the statement goes on the same sentence, so its first word is lower-cased unless it is a name:
    "I", the start of one of `names` (the pages the statement speaks of, the speaker), the first word of
    one ("Tobin reads ..."), or a word `text` (the page's summary) or the statement writes with a capital
    inside a sentence ("Aldric"). A leading "The" is left to the "The" rule (lorekit.lore.article)."""
    statement, opener = str(statement), str(opener).strip()
    if not opener:
        return statement
    first = re.match(r"[A-Z][\w'-]*", statement)
    if not opener.endswith(",") or first is None or _is_name(statement, first.group(0), names, str(text or "")):
        return f"{opener} {statement}"
    return f"{opener} {statement[0].lower()}{statement[1:]}"


def _is_name(statement: str, word: str, names: Any, text: str) -> bool:
    if word == "I" or word.startswith("I'"):
        return True
    for name in map(str, names or ()):
        if re.match(rf"{re.escape(name)}\b", statement) or (word == name.split(" ", 1)[0] and word not in _ARTICLES):
            return True
    return word not in _ARTICLES and re.search(rf"(?<=[a-z,;] ){re.escape(word)}\b", f"{statement} {text}") is not None


_ARTICLES = ("The", "A", "An")


def _mkdir(path: Path) -> Path:
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def _no_random(*_args: Any) -> Any:
    raise jinja2.TemplateRuntimeError("`random` is not allowed (builds must be reproducible); use pick(list)")


class Templates:
    def __init__(self, lore_dir: Path | None = None, template_dir: Path | None = None,
                 bytecode_dir: Path | None = None):
        self.lore_dir = Path(lore_dir).resolve() if lore_dir else None
        dirs = []
        if template_dir:
            dirs.append(Path(template_dir).resolve())
        if self.lore_dir and (self.lore_dir / OVERRIDE_DIR).is_dir():
            dirs.append(self.lore_dir / OVERRIDE_DIR)
        dirs.append(DEFAULT_DIR)
        self.dirs = dirs
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            # compiled templates cached on disk (keyed by source checksum): a small rebuild skips compiling
            bytecode_cache=jinja2.FileSystemBytecodeCache(str(_mkdir(bytecode_dir))) if bytecode_dir else None,
        )
        self.env.filters["random"] = _no_random
        self.env.filters["and_list"] = and_list
        self.env.filters["possessive"] = possessive
        self.env.filters["article"] = article
        self.env.filters["in_date"] = in_date
        self.env.filters["type_noun"] = type_noun
        self.env.filters["first_person"] = first_person
        self.env.filters["that_is_me"] = that_is_me
        self.env.filters["after_opener"] = after_opener
        self.env.filters["plural"] = plural
        self.env.filters["agree"] = agree
        self.env.filters["battle"] = battle
        self.names = set(self.env.list_templates(extensions=["j2"]))
        self._cache: dict[str, jinja2.Template] = {}
        self._globals = dict(self.env.globals)
        self._display: dict[str, str] = {}
        self.article: Article | None = None

    def use_article_names(self, names: list[str]) -> None:
        """Lower-case the leading "The" of these page names inside sentences, in everything rendered."""
        self.article = Article(names)

    def digest(self) -> str:
        """A hash of every template's text and of FILTERS_VERSION: part of the incremental cache key."""
        h = hashlib.blake2b(digest_size=16)
        h.update(f"filters {FILTERS_VERSION}\0".encode())
        for name in sorted(self.names):
            h.update(name.encode() + b"\0" + self.source(name).encode() + b"\0")
        if self.article is not None:  # the names it lower-cases change rendered text too
            h.update(b"article\0" + self.article.digest().encode())
        return h.hexdigest()

    def source(self, name: str) -> str:
        return self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]

    def find(self, *names: str) -> str | None:
        return next((n for n in names if n in self.names), None)

    def display(self, name: str) -> str:
        """Where a template lives, as a user reads it: `_templates/x.j2` or `templates/x.j2`."""
        if name not in self._display:
            self._display[name] = self._where(name)
        return self._display[name]

    def _where(self, name: str) -> str:
        path = Path(self._template(name).filename or name)
        if self.lore_dir and path.is_relative_to(self.lore_dir):
            return path.relative_to(self.lore_dir).as_posix()
        for d in self.dirs:
            if path.is_relative_to(d):  # the defaults read `templates/` in a wheel (lorekit/_templates) too
                return f"{'templates' if d == DEFAULT_DIR else d.name}/{path.relative_to(d).as_posix()}"
        return name

    def _template(self, name: str) -> jinja2.Template:
        tpl = self._cache.get(name)
        if tpl is None:
            try:
                tpl = self._cache[name] = self.env.get_template(name)
            except jinja2.TemplateSyntaxError as e:
                raise TemplateFailure(name, e.lineno, f"template syntax error: {e.message}") from None
        return tpl

    def render(self, name: str, block: str, ctx: dict[str, Any], seed: str = "") -> str:
        """Render one block of a template with a `pick` seeded by `seed`."""
        tpl = self._template(name)
        if block not in tpl.blocks:
            raise TemplateFailure(name, 1, f"template has no `{{% block {block} %}}`")
        rng: list[random.Random] = []
        self.picked = False  # whether this render used pick(): if not, its text does not depend on the seed

        def pick(seq: Any) -> Any:
            if not seq:
                return ""
            if not rng:  # seeding costs more than rendering; only templates that pick pay for it
                rng.append(random.Random(seed))
            self.picked = True
            return seq[rng[0].randrange(len(seq))]

        # shared=True skips Jinja's per-call merge of the globals chain; we merge a cached copy instead
        context = tpl.new_context({**self._globals, **ctx, "pick": pick}, shared=True)
        try:
            try:
                text = "".join(tpl.blocks[block](context)).strip()
                return self.article(text) if self.article is not None else text
            except Exception:
                self.env.handle_exception()  # re-raises with template lines in the traceback
        except TemplateFailure:
            raise
        except Exception as e:
            raise self._failure(name, tpl, e) from None
        return ""  # pragma: no cover

    def lines(self, name: str, block: str, ctx: dict[str, Any], seed: str = "") -> list[str]:
        """A block rendered as distinct non-empty lines (the phrasings of a question)."""
        text = self.render(name, block, ctx, seed)
        return list(dict.fromkeys(" ".join(line.split()) for line in text.splitlines() if line.strip()))

    def _failure(self, name: str, tpl: jinja2.Template, e: Exception) -> TemplateFailure:
        line = None
        for frame in traceback.extract_tb(e.__traceback__):
            if frame.filename == tpl.filename:
                line = frame.lineno
        message = getattr(e, "message", None) or str(e)
        m = _MISSING_RE.search(message)
        missing = next((g for g in m.groups() if g), None) if m else None
        return TemplateFailure(name, line, f"{type(e).__name__}: {message}", missing)
