"""Which notes a player's line asks about, within a budget.

1. Names and aliases in the line resolve to entities (a word that two or three names share, "heron" of
   the Pale Heron, the Heron Oar and the Heron Sighting, to all of them, or to those of them that another
   word of the line names: "the ferry at Gullreach"); "you", "your" is the NPC itself
   ("Where were you born?"), also beside another page ("Which guild do you belong to?"), except in the
   frame of a question ("Do you know the Crooked Eel?") or beside a name the lore does not have ("Do you
   know anything about Droubribru?": nothing about the NPC, so its notes say there is nothing about
   this). A line that names nothing borrows the entities of the
   last exchange ("Who owns it?"). A greeting or small talk ("Well met.", "How are you?") is about the NPC:
   its own notes, summary first, never its secrets (a player's first line is no question to refuse).
2. The notes about those entities are ranked by the line's words (BM25, `bm25s`, on Snowball word
   stems), less the words every question has and the names already resolved, plus the cue words of
   a field (`cues.py`: "whose" asks for an owner); the subject's own notes before notes that only
   mention it; kept secrets of a named entity come first, so the NPC knows to refuse.
3. A line that names no entity falls back to BM25 over all of the NPC's notes (with the names in it that are
   no page, where the NPC's notes say them all: "What happened to Abel?").
4. Notes are taken in rank order while they fit `Budget` (approximate tokens and a count); then the note
   that matches the line best of all, on a page neither named nor linked to it, takes the last place
   (`Retriever._outsider`: prose that names a page without a link).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
from dataclasses import dataclass
from typing import NamedTuple

from lorekit.errors import LorekitError
from lorekit.grounding import cues
from lorekit.grounding.notes import Note, NoteBook

WORD = re.compile(r"[\w']+", re.UNICODE)
# The player's own name follows these ("I'm Arthur", "my name is Arthur"): a name, but not one asked about.
INTRODUCING = {"i'm", ("i", "am"), ("name", "is"), "name's", ("call", "me"), ("called", "me")}
OPENS = ".!?:;([{\"'*-\u201c\u2018\u2014"  # a word after one of these (or first in the line) opens a sentence
SELF_WORDS = {"you", "your", "yours", "yourself", "ye", "thee", "thou", "thy", "thine", "u", "ur", "ya", "yer"}
MAX_NAME_WORDS = 6
OUTSIDER_MARGIN = 1.1  # see Retriever._outsider
OUTSIDER_FLOOR = 1.0
MAX_SHARED = 3  # a word of at most this many names stands for all of them ("the heron")
# "You" in the frame of a question about something else is not the NPC asked about.
FRAME = re.compile(r"\b(?:do|did|have|has|can|could|would|will)\s+(?:you|ye|thou)\s+(?:know|knew|hear|heard|see|seen|"
                   r"meet|met|tell|remember|recall)\b")
# Words that never stand alone for an entity, however unique they are in the vault.
COMMON = {"the", "a", "an", "of", "and", "in", "on", "at", "to", "old", "new", "great", "little", "house", "inn",
          "lady", "lord", "sir", "master", "mistress", "who", "what", "where", "when", "why", "how", "is", "are",
          # words a player says of anything ("a room for the night", "who looks after you"): a single one of
          # them is no name, though a page's name has it (the Night of Black Water, the Lost Verse of the Codex)
          "after", "before", "lost", "night", "day", "first", "second", "third", "seven", "cracked", "water"}

# Words every question has: they say nothing about which fact is asked.
ASKING = {"who", "whom", "whose", "what", "which", "where", "when", "why", "how", "tell", "know", "knows", "me",
          "about", "do", "does", "did", "can", "could", "would", "anything", "something", "say", "said", "is", "are",
          "was", "were", "heard", "hear", "explain", "describe", "speak", "talk", "please", "any", "s"}
# Words too common to stand alone for an entity ("for" of the alias "the coin for the river").
FUNCTION_WORDS = {"for", "with", "from", "into", "onto", "over", "under", "upon", "by", "but", "not", "nor", "yet", "than",
                  "then", "this", "that", "these", "those", "all", "any", "some", "each", "every", "one", "own", "out",
                  "off", "up", "down", "his", "her", "its", "our", "their", "your", "you", "was", "were", "has", "had",
                  "have", "will", "can", "may", "too", "very", "more", "most", "such", "only", "also", "just", "now"}
# Among a named page's notes these say nothing about which of its facts is asked either.
MODALS = {"should", "might", "must", "shall", "will", "may", "ought"}
# Nor do fillers of a spoken line ("Who leads the Brotherhood these days?" asks for the leader).
FILLERS = {"these", "days", "nowadays", "now", "today", "lately", "currently", "anyway", "actually", "really",
           "ever", "just", "again", "here", "there", "then", "so", "well", "right", "ok", "okay"}
NAMED_SKIP = frozenset(ASKING | MODALS | FILLERS | SELF_WORDS)  # out of the match among a named page's notes
# Across all of an NPC's notes (a line that names no page) these match the notes' question keys, not a fact.
# (bm25s's English stop words are 33, without "do", "you", "about" or "have".)
FALLBACK_SKIP = ASKING | SELF_WORDS | {"have", "has", "had", "been", "ever", "i", "i'm", "me", "my", "we", "us", "our",
                                       "he", "him", "his", "she", "her", "they", "them", "their", "it", "its", "there",
                                       "here", "from", "of", "seen", "see", "met", "meet", "find", "where's", "who's",
                                       "happen", "happened", "happens", "become", "became"}  # "what happened to
# Abel?": the events' own "X happened in Y" notes would outrank the one note that names him

# Greetings and small talk ("Well met.", "Good evening to you, friend!", "How are you today?", "Thanks!"): a
# line with a greeting word or phrase, no name and no other words than these, question words that ask for no
# fact ("how", "you"), stop words and the player's own name asks about nothing but the NPC.
GREETING_WORDS = {"hello", "hullo", "hi", "hey", "heya", "hiya", "howdy", "hail", "ahoy", "greetings", "salutations",
                  "morning", "mornin", "afternoon", "evening", "evenin", "goodbye", "bye", "farewell", "thanks",
                  "thank", "cheers", "welcome"}
GREETING_PHRASES = ("well met", "good day", "good night", "how are you", "how are ye", "how do you do",
                    "how have you been", "how goes it", "how fare you", "how be you", "how it going", "how are things",
                    "what up", "nice to meet you", "pleased to meet you", "good to see you", "how do you fare",
                    "see you", "see ya", "take care", "safe travels", "be off", "be going", "must go", "so long",
                    "that all", "until next time")  # as
# `words` reads them: "what's up" is "what up"
CHAT_WORDS = {"good", "well", "met", "nice", "pleased", "glad", "lovely", "fine", "again", "today", "tonight",
              "friend", "stranger", "traveller", "traveler", "sir", "madam", "ma'am", "mister", "miss", "fare",
              "faring", "doing", "going", "keeping", "alright", "ok", "okay", "up", "new", "long",
              "time", "so", "too", "very", "all", "oh", "ah", "hmm", "yes", "am", "ya", "a", "an", "the", "and",
              "off", "i'll", "i'd", "must", "later", "soon", "needed", "then", "now", "travels", "care", "next",
              "to", "it", "be", "this", "that", "for", "with", "at", "in", "on", "things", "goes"}
FACT_QUESTIONS = {"who", "whom", "whose", "what", "which", "where", "when", "why"}  # "Thanks, and who is she?"
CHAT_SKIP = frozenset(GREETING_WORDS | CHAT_WORDS | (FALLBACK_SKIP - FACT_QUESTIONS))  # what small talk may hold


@functools.cache
def _bm25s():
    """The `bm25s` module, quiet and without JAX (imported once; every retrieval asks for it).

    On import bm25s sets its own logger to DEBUG (then logs every index it builds), and, where JAX is
    installed, imports it and runs a JAX op, which makes JAX take 75 % of a GPU's memory before training
    starts (seen on the H200: 131 GB held). LoreKit only needs BM25 scores (numpy), so bm25s is imported
    with JAX hidden, unless the process already imported JAX itself."""
    if "bm25s" not in sys.modules and "jax" not in sys.modules:
        sys.modules["jax"] = None  # type: ignore[assignment]  # `import jax` raises ImportError
        try:
            import bm25s  # noqa: F401
        finally:
            del sys.modules["jax"]
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def tokens(texts: list[str]) -> list[list[str]]:
    """BM25's tokens of `texts`: lower case, English stop words out, Snowball stems (notes and lines alike)."""
    return _bm25s().tokenize(texts, stopwords="en", stemmer=cues.stem, show_progress=False, return_ids=False)


@dataclass(frozen=True)
class Budget:
    tokens: int = 200  # approximate tokens (4 characters each) all notes together may take
    notes: int = 6  # at most this many notes

    def check(self, where: str = "[serve] notes_budget") -> None:
        if self.notes < 1 or self.tokens < 16:
            raise LorekitError(f"{where}: a notes budget of {self.tokens} tokens / {self.notes} notes cannot hold one "
                               "note; set notes_budget to at least 16 and notes_max to at least 1 (or notes = false)")


def approx_tokens(text: str) -> int:
    """The budget's measure: one token per 4 characters, the same at compile and at serve time."""
    return len(text) // 4 + 1


def words(text: str) -> list[str]:
    return [w.lower().removesuffix("'s").strip("'") for w in WORD.findall(text)]


class Names:
    """Lower-case word sequences -> entity ids: names, aliases, names without "The", and single
    words of a name that no other entity uses (a player says "Bettany", not "Bettany Crumb"); `shared`:
    a word two or three names use ("the heron"), which stands for all of them, ranked by the line.
    Built from every page's id, name and aliases; `old` (a previous vault's) is kept where those are
    unchanged, as after most edits."""

    def __init__(self, vault, old: Names | None = None):
        self.source = [(e.id, e.name, e.aliases) for e in vault.entities.values()]
        if old is not None and old.source == self.source:
            self.table, self.words, self.shared = old.table, old.words, old.shared
            return
        table: dict[tuple[str, ...], set[str]] = {}
        for entity in vault.entities.values():
            for name in {entity.name, *entity.aliases}:
                key = tuple(words(name))
                if key:
                    table.setdefault(key, set()).add(entity.id)
                    if key[0] == "the" and len(key) > 1:
                        table.setdefault(key[1:], set()).add(entity.id)
        full = {k for k in table}
        parts: dict[str, set[str]] = {}
        for key, ids in list(table.items()):
            for w in key:
                if len(w) >= 3 and w not in COMMON and w not in FUNCTION_WORDS:  # "the coin for the river": not "for"
                    parts.setdefault(w, set()).update(ids)
        shared = {}
        for w, ids in parts.items():
            if len(ids) == 1 and (w,) not in full:
                table[(w,)] = set(ids)
            elif len(ids) <= MAX_SHARED and (w,) not in full:
                shared[w] = frozenset(ids)
        self.shared: dict[str, frozenset[str]] = shared
        self.table = {k: frozenset(v) for k, v in table.items()}
        self.words = frozenset(w for key in table for w in key)  # every word of every name

    @functools.cached_property
    def _by_entity(self) -> dict[str, frozenset[str]]:
        """Entity id -> the words of its table keys (built once, on first use)."""
        out: dict[str, set[str]] = {}
        for key, ids in self.table.items():
            for e in ids:
                out.setdefault(e, set()).update(key)
        return {e: frozenset(ws) for e, ws in out.items()}

    def words_of(self, ids) -> frozenset[str]:
        """The words of the names, aliases and single-word names of the entities `ids`."""
        return frozenset().union(*(self._by_entity.get(e, frozenset()) for e in ids))

    def unknown(self, text: str) -> list[str]:
        """Words of `text` that look like a name the lore does not have: capitalized, not opening a
        sentence, no word of any page's name or alias ("Do you know anything about Droubribru?")."""
        return self.capitalized(text)[0]

    def capitalized(self, text: str) -> tuple[list[str], list[str]]:
        """The line's capitalized words inside sentences: (names the lore does not have, the player's own
        name: "I'm Arthur Pendle", "my name is Arthur")."""
        out, own_name, before = [], [], ("", "")  # the two words before this one, lower case
        for m in WORD.finditer(text):
            word, j = m.group(), m.start() - 1
            while j >= 0 and text[j].isspace():  # the character before the word, past spaces
                j -= 1
            lower, own = word.lower(), before in INTRODUCING or before[1] in INTRODUCING
            before = (before[1], lower) if not own or not word[0].isupper() else before  # "I'm Arthur Pendle"
            if own and word[0].isupper():
                own_name.append(word)
            if len(word) < 2 or not word[0].isupper() or lower.startswith("i'") or j < 0 or text[j] in OPENS or own:
                continue
            key = words(word)
            if key and key[0] not in self.words and key[0] not in COMMON and key[0] not in ASKING:
                out.append(word)
        return out, own_name

    def find(self, text: str) -> list[str]:
        """Entity ids named in `text`, in order of appearance, longest names first. A shared word stands
        for those of its names that another word of the line also names ("the ferry at Gullreach": "ferry"
        is Gullreach Ferry and the Midnight Ferry, "Gullreach" Gullreach Ferry and the Gullreach Ferryman:
        Gullreach Ferry), else for all of them ("the heron")."""
        ws, found, i = words(text), [], 0  # found: (ids, shared)
        while i < len(ws):
            for n in range(min(MAX_NAME_WORDS, len(ws) - i), 0, -1):
                ids = self.table.get(tuple(ws[i:i + n]))
                if ids:
                    found.append((ids, False))
                    i += n
                    break
            else:
                if ws[i] in self.shared:
                    found.append((self.shared[ws[i]], True))
                i += 1
        out = []
        for k, (ids, shared) in enumerate(found):
            if shared:
                others = frozenset().union(*(o for j, (o, _) in enumerate(found) if j != k))
                ids = (ids & others) or ids
            out += sorted(ids)
        return list(dict.fromkeys(out))


class Line(NamedTuple):
    """A player's line as retrieval reads it."""

    named: list[str]  # entity ids it names (`Names.find`)
    unknown: list[str]  # names in it the lore does not have (`Names.unknown`)
    greets: bool  # it holds a greeting word or phrase (GREETING_WORDS, GREETING_PHRASES)
    rest: frozenset[str]  # its words that are no greeting, chat, question or stop word, nor the player's name


class NpcIndex(NamedTuple):
    """One NPC's notes, their BM25 model, and where each entity's notes sit among them."""

    notes: list[Note]
    model: object
    own: dict[str, list[int]]  # entity id -> positions of the notes about it
    about: dict[str, list[int]]  # entity id -> positions of the other notes that speak of it


def index_of(notes: list[Note], model: object) -> NpcIndex:
    own: dict[str, list[int]] = {}
    about: dict[str, list[int]] = {}
    for i, note in enumerate(notes):
        own.setdefault(note.entity, []).append(i)
        for e in note.about - {note.entity}:
            about.setdefault(e, []).append(i)
    return NpcIndex(notes, model, own, about)


class Retriever:
    """Retrieval over one NoteBook; built once per lore snapshot (cheap: one BM25 index per NPC)."""

    def __init__(self, vault, book: NoteBook, budget: Budget | None = None, old: Retriever | None = None):
        self.book, self.budget = book, budget or Budget()
        self.names = Names(vault, old.names if old is not None else None)
        self._index: dict[str, NpcIndex] = {}
        self._building = threading.Lock()  # one build per NPC, however many worker threads ask at once

    def warm(self, npc: str) -> None:
        """Build the NPC's search index now (the server does it while idle, not in a first turn)."""
        self._bm25(npc)

    def adopt(self, old: Retriever | None) -> None:
        """Take over the search indexes of `old` (the previous lore's) for NPCs whose notes and the
        vault's names are unchanged, so a reload rebuilds only what an edit touched."""
        if old is None or (old.names.table is not self.names.table and old.names.table != self.names.table):
            return
        for npc, index in list(old._index.items()):  # the worker may be adding one now
            if self.book.of(npc) == index.notes:
                self._index.setdefault(npc, index)

    def _bm25(self, npc: str) -> NpcIndex:
        index = self._index.get(npc)
        if index is None:
            with self._building:  # the threads that came too late wait for it instead of building it again
                index = self._index.get(npc)
                if index is None:
                    notes = self.book.of(npc)
                    corpus = [self._strip(f"{n.heading} {n.keys} {n.text}") for n in notes] or [""]
                    model = _bm25s().BM25()
                    model.index(tokens(corpus), show_progress=False)
                    self._index[npc] = index = index_of(notes, model)
        return index

    def _strip(self, text: str) -> str:
        """The text without entity names: they tell which page, not which fact of it (step 1 did that)."""
        ws, out, i = words(text), [], 0
        while i < len(ws):
            for n in range(min(MAX_NAME_WORDS, len(ws) - i), 0, -1):
                if n > 1 and tuple(ws[i:i + n]) in self.names.table:
                    i += n
                    break
            else:
                out.append(ws[i])
                i += 1
        return " ".join(out)

    def _scores(self, npc: str, text: str, fallback: bool = False, skip: frozenset[str] = frozenset(),
                named: list[str] = ()) -> list[float]:
        """BM25 scores of the NPC's notes for the line. Among the notes of the `named` entities the
        words every question has ("tell", "know", "should") and the names' own words are left out,
        and a note whose field the line cues gets `cues.BONUS`; across all notes (`fallback`) question
        words of any kind are left out."""
        notes, model = self._bm25(npc)[:2]
        if not notes:
            return []
        line = [w for w in words(self._strip(text)) if w not in skip and not (fallback and w in FALLBACK_SKIP)]
        if named:
            skip_named = self.names.words_of(named)
            line = [w for w in line if w not in NAMED_SKIP and w not in skip_named]
        query = [w for w in tokens([" ".join(line)])[0] if w in model.vocab_dict]
        scores = model.get_scores(query).tolist() if query else [0.0] * len(notes)
        if named:
            asked = cues.asked_fields(text, words(text))
            for i, note in enumerate(notes):
                if note.heading.lower() in asked:
                    scores[i] += cues.BONUS
        return scores

    def read(self, text: str) -> Line:
        """What retrieval needs of a player's line, read once per turn."""
        unknown, own = self.names.capitalized(text)
        ws = words(text)
        chat = f" {' '.join(ws)} "
        phrases = [p for p in GREETING_PHRASES if f" {p} " in chat]
        rest = set(ws) - CHAT_SKIP - {w for part in (*phrases, *own) for w in words(part)}
        return Line(self.names.find(text), unknown, bool(phrases or GREETING_WORDS & set(ws)), frozenset(rest))

    def small_talk(self, npc: str, line: Line) -> bool:
        """A greeting or small talk to this NPC: a greeting word or phrase, no name but the NPC's own,
        no other words ("Greetings, Bettany. How are you?")."""
        if not line.greets or line.unknown or any(e != npc for e in line.named):
            return False
        if not line.rest:
            return True
        return line.rest <= self.names.words_of((npc,))  # "Greetings, Bettany.

    def entities(self, npc: str, text: str, history: list[dict[str, str]] | None = None,
                 line: Line | None = None) -> list[str]:
        """The entities a line asks about: named ones; the NPC for "you" (after them, and not in the
        frame of a question about them), and for small talk; else, when the line names nothing at all,
        those of the last exchange ("Thanks!" borrows nothing). `line`: `read(text)`, where the caller has it."""
        line = line or self.read(text)
        named = list(line.named)
        if line.unknown:
            return named  # an unknown X borrows nothing, and "you" is only the frame of asking about it
        others = [e for e in named if e != npc]
        if others:
            if (npc not in named and SELF_WORDS & set(words(FRAME.sub(" ", text.lower())))
                    and any(self._knows(npc, e) for e in others) and not any(self._keeps(npc, e) for e in others)):
                named.append(npc)  # "Which guild do you belong to?"; not "Do you know the Crooked Eel?"
            # nor when the NPC knows nothing of the others (its notes would hide that), nor when it keeps one
            # of them secret ("As your lord, I order you to speak of X": the kept topic alone, as trained)
            return named
        if self.small_talk(npc, line):
            return [npc]  # "Thanks!" borrows nothing from the last exchange
        if SELF_WORDS & set(words(text)) and npc not in named:
            named.append(npc)
        if not [e for e in named if e != npc]:
            for msg in (history or [])[-2:]:  # the player's last question first, then the reply
                named += [e for e in self.names.find(msg.get("content", "")) if e not in named and e != npc]
        return named

    def _said(self, npc: str, word: str) -> bool:
        """Whether the NPC's notes hold `word` (as BM25 reads it: stemmed, not a stop word)."""
        vocab = self._bm25(npc).model.vocab_dict
        stems = tokens([word])[0]
        return bool(stems) and all(s in vocab for s in stems)

    def _knows(self, npc: str, entity: str) -> bool:
        """Whether any of the NPC's notes is about `entity` or speaks of it."""
        index = self._bm25(npc)
        return entity in index.own or entity in index.about

    def _keeps(self, npc: str, entity: str) -> bool:
        """Whether the NPC keeps a secret of `entity`."""
        index = self._bm25(npc)
        return any(index.notes[i].secret for i in index.own.get(entity, ()))

    def retrieve(self, npc: str, text: str, history: list[dict[str, str]] | None = None) -> list[Note]:
        if not self.book.by_npc.get(npc):
            return []
        index = self._bm25(npc)
        notes = index.notes
        line = self.read(text)
        if self.small_talk(npc, line):  # "Well met.": the NPC's own notes, summary first, never a secret
            own = [(notes[i].heading != "summary", i) for i in index.own.get(npc, ()) if not notes[i].secret]
            return self.fit([notes[i] for _, i in sorted(own)])
        named = self.entities(npc, text, history, line)
        # the words of a name the lore does not have ("Zunyrk Keep") are no fact's words; in a line that names
        # no page, names that are no page but that the NPC's notes all say ("What happened to Abel?": Bettany's
        # late husband) are what to search for
        strange = frozenset(w for name in line.unknown for w in words(name))
        if not named and all(self._said(npc, w) for w in strange):
            strange = frozenset()
        scores = self._scores(npc, text, fallback=not named, skip=strange, named=named)
        rank = {e: i for i, e in enumerate(named)}
        keyed = []
        if rank:
            for e, r in rank.items():  # the named entities' own notes (their kept secrets first)
                for i in index.own.get(e, ()):
                    note = notes[i]
                    keyed.append(((0 if note.secret else 1, -scores[i], r, note.heading != "summary", i), note))
            for i in {i for e in rank for i in index.about.get(e, ()) if notes[i].entity not in rank}:
                note = notes[i]  # a note of another page that speaks of them
                keyed.append(((2, -scores[i], min(rank[e] for e in note.about if e in rank), 1, i), note))
        else:  # nothing named: BM25 over all of the NPC's notes
            keyed = [((3, -score, 0, 0, i), notes[i]) for i, score in enumerate(scores) if score > 0]
        keyed.sort(key=lambda k: k[0])
        chosen = self.fit([note for _, note in keyed])
        # a page that tells it without linking the named one ("What does a crossing at Gullreach cost?": Hobb
        # Marlow's page) gets the last place; not for a greeting, nor beside a kept secret (the topic alone)
        outsider = None if not rank or line.greets or any(n.secret for n in chosen) else self._outsider(index, scores, rank)
        if outsider is not None and self.fits([notes[outsider]]):
            while not self.fits([*chosen, notes[outsider]]):
                chosen = chosen[:-1]
            chosen.append(notes[outsider])
        return chosen

    @staticmethod
    def _outsider(index: NpcIndex, scores: list[float], rank: dict[str, int]) -> int | None:
        """The best note neither of nor about the named pages, when the line's words match it better than
        any of theirs (by `OUTSIDER_MARGIN`): prose names a page without linking it."""
        inside = {i for e in rank for i in (*index.own.get(e, ()), *index.about.get(e, ()))}
        best_inside = max((scores[i] for i in inside), default=0.0)
        best = max((i for i in range(len(scores)) if i not in inside and not index.notes[i].secret),
                   key=lambda i: scores[i], default=None)
        if best is None or scores[best] <= 0 or scores[best] < OUTSIDER_MARGIN * max(best_inside, OUTSIDER_FLOOR):
            return None
        return best

    def fits(self, notes: list[Note]) -> bool:
        return len(notes) <= self.budget.notes and sum(approx_tokens(n.text) + 2 for n in notes) <= self.budget.tokens

    def fit(self, ranked: list[Note]) -> list[Note]:
        """Notes in rank order while they fit the budget."""
        out, used = [], 0
        for note in ranked:
            cost = approx_tokens(note.text) + 2
            if len(out) >= self.budget.notes:
                break
            if used + cost > self.budget.tokens:
                continue
            out.append(note)
            used += cost
        return out
