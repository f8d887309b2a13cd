"""What a player's question asks for, when its words are not the notes' words.

A note's field says what it states (`date`, `owner`, `residence`); its question keys are the training
phrasings of that field. A player says it otherwise ("At what time did the siege occur?", "Whose oar
is that?", "Where is Yselde living these days?"), and among one page's notes BM25 then ranks a
neighbour first; a small model reads the first notes most (bench/results/retrieval_recall.md). So
retrieval also reads cue words: common English for each field LoreKit's default templates know,
matched on word stems (Snowball's English stemmer, which BM25 uses too). A note whose field a line
cues gets `BONUS` added to its BM25 score. A few fields vaults often add have cues too (length,
material, price, ...); others have none here: their keys and heading still match through BM25.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# Field label (a note's heading, as `lorekit.lore` writes it: lower case, "_" as a space) -> cue words.
CUES: dict[str, str] = {
    "date": "when time year date ago era season",  # not "day": "these days" is now
    "founded": "founded found establish established built since old when year ago set started",
    "age": "old age aged years",
    "location": "where whereabouts place located site lie lies rest rests stored hidden",
    "residence": "live lives living home dwell reside stay abode house settle settled",
    "birthplace": "born birth birthplace hometown native grew",
    "owner": "own owns owner belong belongs whose possess holds keeps",
    "made by": "made make maker craft crafted forge forged built create created author wrote carve carved",
    "leader": "lead leads leader head heads command commands charge boss run runs chief follow captain master",
    "ruler": "rule rules ruler govern governs reign king queen lord charge sway run runs",
    "members": "member members join joined belong counts ranks",
    "affiliation": "side faction group guild belong serve serves allegiance loyal",
    "factions": "faction factions group groups guild guilds sway operate present",
    "allies": "ally allies allied friend friends support alliance",
    "enemies": "enemy enemies foe foes rival rivals against oppose opposes hate hostile fight",
    "occupation": "work job trade profession occupation earn living",
    "title": "title rank address",
    "aliases": "called nickname alias known",
    "family": "family kin relatives wife husband son daughter children child parents mother father brother "
              "sister married",
    "cause": "why cause caused reason start started trigger brought bring",
    "outcome": "result outcome end ended consequence lead led effect came after",
    "participants": "took part involved fought participants hand join joined",
    "population": "many population big size populous souls inhabitants",
    "climate": "weather climate cold hot warm rain",
    "kind": "kind sort type",
    "goal": "goal want wants aim purpose seek plan trying",
    "headquarters": "base based headquarters seat hideout lair den stronghold",
    "part of": "part region within realm land contain contains include includes inside",
    "power": "power ability magic",
    "status": "status alive dead still",
    "species": "species race creature",
    # fields many vaults add (the sample world has them): their labels are not the words players ask with
    "length": "long length far distance miles leagues",
    "height": "tall high height",
    "depth": "deep depth",
    "size": "big large small size",
    "material": "made material wood stone metal iron steel bronze glass bone",
    "death toll": "died dead killed deaths death lives toll perished drowned",
    "price": "cost costs price fare pay charge much",
}
# Field labels a vault makes of a few words ("number of gates", "year of death") are cued by their first words.
PREFIXES: dict[str, str] = {
    "number of": "many number count",
    "year of": "when year",
    "date of": "when date",
    "place of": "where",
}
BONUS = 2.0  # added to a cued note's BM25 score (scores run ~0-4 on a page's notes)
# "What does Hessa do?", "What do you do here?", "What does he do for a living?": the job
DOES_FOR_WORK = re.compile(r"\bdo\b(?:\s+(?:here|now|these days|for (?:a )?living))?\W*$")


@functools.cache
def _english():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


@functools.cache
def stem_word(word: str) -> str:
    return _english().stemWord(word)


def stem(words: list[str]) -> list[str]:
    """Snowball English stems (cached per word: a vault's vocabulary is small)."""
    return [stem_word(w) for w in words]


@functools.cache
def _cue_stems() -> dict[str, frozenset[str]]:
    return {field: frozenset(stem(words.split())) for field, words in (*CUES.items(), *PREFIXES.items())}


@dataclass(frozen=True)
class Asked:
    """The fields a line cues: a note heading is `in` it when `CUES` names it or it begins with a cued prefix."""

    fields: frozenset[str]
    prefixes: tuple[str, ...]  # "number of ", ...

    def __contains__(self, heading: object) -> bool:
        return heading in self.fields or bool(self.prefixes and isinstance(heading, str)
                                               and heading.startswith(self.prefixes))


def asked_fields(line: str, words: list[str]) -> Asked:
    """The fields (note headings) whose cue words the line holds."""
    stems = set(stem(words))
    if DOES_FOR_WORK.search(line.lower()):
        stems.add(stem_word("work"))
    cued = frozenset(field for field, cues in _cue_stems().items() if cues & stems)
    return Asked(cued, tuple(f"{p} " for p in PREFIXES if p in cued))
