"""Scoring replies: pure functions, no model. The rules are documented in docs/eval.md.

- fact recall: every expected key value appears in the reply as a whole-word phrase, after
  normalization (case, accents, punctuation, a leading article, number words 0-20 and tens), either
  in full or as one of its declared aliases. A partial name ("Vell" for "Mara Vell") or another name
  is wrong.
- honest ignorance: a "don't know" phrase, and no invented specifics (numbers or capitalized names
  that are in neither the question nor the lore).
- refusal: a "won't tell" phrase (`REFUSAL_PHRASES`, the NPCs' own `refuse` lines, the build's refusals).
- in character: no template markup, no lines spoken for the player, no "as an AI" talk, not empty,
  no echo of the prompt. (Secret leaks have their own rule: `lorekit.evaluate.leaks`.)
- repetition: the longest stretch of a reply made of word n-grams found in train.jsonl answers.
- general agreement: word-overlap F1 of the content words of two answers.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

_NUMBERS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBERS.update({w: str(10 * i) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)})
_ARTICLES = {"the", "a", "an"}

# Normalized phrases (see normalize) that say "I don't know" in many voices.
IGNORANCE_PHRASES = (
    "i don t know", "i do not know", "dunno", "no idea", "never heard", "not heard of", "haven t heard",
    "have not heard", "not familiar", "unfamiliar", "can t say", "cannot say", "can t tell you",
    "cannot tell you", "couldn t tell you", "could not tell you", "don t recognize", "don t recognise",
    "do not recognize", "do not recognise", "not a name i know", "no name i know", "nobody by that name",
    "no one by that name", "nobody called", "no one called", "means nothing to me", "not someone i know",
    "don t know of", "do not know of", "know nothing", "knows nothing", "unknown to me", "i wouldn t know",
    "never met", "not sure who", "not sure what", "i can t help you with", "beyond what i know",
    "no record of", "not part of the lore", "nothing about", "not know who", "not know what",
    # the default wording of templates/replies/unknown.j2 and templates/grounding/absent.j2
    "but not that", "never heard it said", "nobody ever told me", "lore does not say", "not recorded",
    "no report on", "don t know anything", "outside my field",
    # common wording that is no NPC's own line here: what a model brings from elsewhere (the notes prior's
    # worlds: "Can't help you there. Not a word of it has reached the Oar, and most words do.")
    "can t help you there", "cannot help you there", "not a word of it", "no word of it",
)
# Normalized phrases that refuse to tell (templates/replies/secret.j2 and common wording).
REFUSAL_PHRASES = (
    "won t tell", "will not tell", "not telling", "can t tell", "cannot tell", "won t say", "will not say",
    "i refuse", "not something i will", "not something i ll", "better left unsaid", "lips are sealed",
    "won t discuss", "will not discuss", "won t speak of", "will not speak of", "don t speak of", "do not speak of",
    "ask someone else", "not for your ears", "none of your business", "keep it to myself", "not at liberty",
    "i can t say", "i cannot say", "not my place to say", "my secret", "not going to tell",
)
# Words that may be capitalized in an honest "don't know" without being invented facts.
_ADDRESS = {"i", "im", "id", "ive", "ill", "traveler", "traveller", "stranger", "friend", "sir", "madam",
            "lord", "lady", "gods", "god", "outsider", "mister", "miss"}

_MARKUP = re.compile(
    r"<\s*/?\s*(?:start_of_turn|end_of_turn|bos|eos|pad|start_of_image|end_of_image)\s*>"
    r"|<\|[a-z_]*\|?>|<[a-z_]*\|>|^\s*(?:user|model|assistant|system)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_PLAYER_LINE = re.compile(r"^\s*[*_]*(?:user|player|human|you|me|q|question)[*_]*\s*:", re.IGNORECASE | re.MULTILINE)
_AI_TALK = ("as an ai", "language model", "i am an ai", "i m an ai", "an ai assistant", "i am a chatbot",
            "i m a chatbot", "as an assistant")
_STOP_WORDS = set(
    "a an the of in on at to for from by with and or but is are was were be been being it its this that "
    "these those he she they them his her their i you we me my your our what who which whom where when "
    "why how do does did not no yes so as than then there here has have had will would can could shall "
    "should may might must about into over under also just very too".split()
)


def normalize(text: str) -> str:
    """Lower case, no accents, punctuation as spaces, '1,200' as '1200', number words as digits."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"(?<=\d)[,_](?=\d{3}\b)", "", text)
    text = re.sub(r"[\W_]+", " ", text)
    text = " ".join(_NUMBERS.get(w, w) for w in text.split())
    # "twenty-one" -> "20 1" -> "21"
    return re.sub(r"\b([2-9])0 ([1-9])\b", r"\1\2", text)


def words(text: str) -> list[str]:
    return normalize(text).split()


def _phrase(value: str) -> str:
    toks = words(value)
    while len(toks) > 1 and toks[0] in _ARTICLES:
        toks = toks[1:]
    return " ".join(toks)


def mentions(reply: str, value: str, aliases: Iterable[str] = ()) -> bool:
    """True when `value` (or one of its aliases) appears in `reply` as a whole-word phrase."""
    hay = f" {normalize(reply)} "
    # The value may drop a leading article ("Ash Guild" for "the Ash Guild"); an alias is matched as
    # declared, so "the Watch" needs its article and a reply saying "I watch" is no match.
    needles = [_phrase(value), *(normalize(a) for a in aliases)]
    return any(n and f" {n} " in hay for n in needles)


def fact_verdict(
    reply: str, expect: list[str], aliases: Mapping[str, list[str]] | None = None, names: Iterable[str] = ()
) -> dict:
    """Score a fact question: correct when every expected value is mentioned.

    `names` are the lore's entity names; a wrong reply that mentions one of them that was not
    expected is reported as a near miss ("said Oren Vell")."""
    aliases = aliases or {}
    missing = [v for v in expect if not mentions(reply, v, aliases.get(v, ()))]
    expected = {_phrase(v) for v in expect}
    said = [n for n in names if _phrase(n) not in expected and mentions(reply, n, aliases.get(n, ()))]
    reply_words = set(words(reply))
    partial = [v for v in missing if len(words(v)) > 1 and reply_words & (set(words(v)) - _ARTICLES)]
    correct = bool(expect) and not missing
    if correct:
        label = "correct"
    elif said:
        label = "near miss: said " + ", ".join(said[:3])
    elif partial:
        label = "near miss: part of " + ", ".join(partial[:3])
    else:
        label = "missing: " + ", ".join(missing)
    return {"correct": correct, "missing": missing, "said": said, "label": label,
            "share": (len(expect) - len(missing)) / len(expect) if expect else 0.0}


def says_dont_know(reply: str, phrases: Iterable[str] = IGNORANCE_PHRASES) -> bool:
    hay = f" {normalize(reply)} "
    return any((n := normalize(p)) and f" {n} " in hay for p in phrases)


def refuses(reply: str, extra_phrases: Iterable[str] = ()) -> bool:
    """True when the reply declines to tell ("I won't speak of it", the NPC's own `refuse` line)."""
    return says_dont_know(reply, (*REFUSAL_PHRASES, *extra_phrases))


def phrases_of(lines: Iterable[str], skip: Iterable[str] = (), min_words: int = 3) -> set[str]:
    """Phrases that recognise replies like `lines` (an NPC's "don't know" or refusal line, the build's
    rendered answers): each whole line, and each of its sentences of `min_words`+ words that names
    nothing in `skip` (the entity a row asked about, so "never heard of Droubribru" is not needed)."""
    out: set[str] = set()
    banned = [f" {n} " for n in (_phrase(s) for s in skip) if n]
    for line in lines:
        for part in (line, *re.split(r"[.!?;:]+", line)):
            text = normalize(part)
            if len(text.split()) >= min_words and not any(b in f" {text} " for b in banned):
                out.add(text)
    return out


def invented_specifics(reply: str, question: str, known_names: Iterable[str] = ()) -> list[str]:
    """Numbers and mid-sentence capitalized words that are in neither the question nor the lore."""
    allowed = set(words(question)) | _ADDRESS
    for name in known_names:
        allowed.update(words(name))
    found = [n for n in re.findall(r"\d+", reply) if n not in allowed]
    for m in re.finditer(r"[A-Z][\w'’-]*", reply):
        before = reply[: m.start()].rstrip(" \t\"'“‘*_(")
        if not before or before[-1] in ".!?:\n—-;…":
            continue  # first word of a sentence
        word = normalize(m.group())
        if word and all(w not in allowed for w in word.split()):
            found.append(m.group())
    return found


def ignorance_verdict(reply: str, question: str, known_names: Iterable[str] = (),
                      extra_phrases: Iterable[str] = ()) -> dict:
    dont_know = says_dont_know(reply, (*IGNORANCE_PHRASES, *extra_phrases))
    invented = invented_specifics(reply, question, known_names)
    honest = dont_know and not invented
    if honest:
        label = "honest: doesn't know"
    elif dont_know:
        label = "says unknown but invents " + ", ".join(invented[:3])
    else:
        label = "no 'don't know'" + (f"; invents {', '.join(invented[:3])}" if invented else "")
    return {"honest": honest, "dont_know": dont_know, "invented": invented, "label": label}


def unechoed(reply: str, prompt_texts: Iterable[str], min_words: int = 5) -> str:
    """The reply without its sentences copied from the prompt (5+ words found verbatim there): an
    echoed "if you do not know something, say so" from the persona is no "I don't know"."""
    prompt = " " + " ".join(normalize(t) for t in prompt_texts) + " "
    kept = [part for part in re.split(r"(?<=[.!?;:\n])", reply)
            if len(n := normalize(part).split()) < min_words or f" {' '.join(n)} " not in prompt]
    return "".join(kept)


def echoes(reply: str, prompt_texts: Iterable[str], n: int = 8, notes: str = "") -> bool:
    """True when the reply repeats `n` words in a row of its own prompt (system text or question):
    a model that did not learn to answer continues the prompt instead. Words the lore notes also hold
    are no echo: stating a note in its own words is answering (the persona repeats the NPC's summary,
    which is also its summary note)."""
    return longest_shared_run(reply, ngram_index(prompt_texts, n) - ngram_index([notes], n), n) >= n


def character_problems(reply: str, prompt_texts: Iterable[str] = (), notes: str = "") -> list[str]:
    """Reasons a reply is out of character; [] when it is in character. `notes`: the prompt's lore notes."""
    problems = []
    if not reply.strip():
        problems.append("empty reply")
    if prompt_texts and echoes(reply, prompt_texts, notes=notes):
        problems.append("echoes the prompt")
    if _MARKUP.search(reply):
        problems.append("template markup")
    if _PLAYER_LINE.search(reply):
        problems.append("speaks the player's line")
    low = f" {normalize(reply)} "
    if any(f" {p} " in low for p in (normalize(t) for t in _AI_TALK)):
        problems.append("talks as an AI")
    return problems


def ngram_index(texts: Iterable[str], n: int) -> set[tuple[str, ...]]:
    """All word n-grams of `texts` (training answers)."""
    grams: set[tuple[str, ...]] = set()
    for text in texts:
        toks = words(text)
        grams.update(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    return grams


def longest_shared_run(reply: str, index: set[tuple[str, ...]], n: int) -> int:
    """Words in the longest stretch of `reply` whose every n-gram is a training n-gram (0 if none)."""
    toks = words(reply)
    best, start = 0, None
    for i in range(len(toks) - n + 1):
        if tuple(toks[i : i + n]) in index:
            start = i if start is None else start
            best = max(best, i - start + n)
        else:
            start = None
    return best


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in _STOP_WORDS]


def overlap_f1(a: str, b: str) -> float:
    """Word-overlap F1 of the content words of two answers (1.0 when both are empty of content)."""
    wa, wb = content_words(a), content_words(b)
    if not wa and not wb:
        return 1.0
    if not wa or not wb:
        return 0.0
    common = 0
    pool = list(wb)
    for w in wa:
        if w in pool:
            pool.remove(w)
            common += 1
    if not common:
        return 0.0
    p, r = common / len(wa), common / len(wb)
    return 2 * p * r / (p + r)


def share(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None
