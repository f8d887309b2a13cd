"""Copies of bench/prior_world whose proper names never repeat: data for a notes-reading prior that learns
the reading, not one world's names (bench/results/prior_notes.md says why).

    python bench/prior_worlds.py OUT --copies N [--seed S] [--world bench/prior_world] [--compile]

writes OUT/world-01 ... OUT/world-NN: the world with every proper name replaced, consistently within a copy,
by a generated one (syllables, different in every copy, from the world and from sample_lore). With --recast,
every NPC of every copy also gets other "I don't know" and refusal lines (bench/prior_lines.py). With --compile,
each copy is compiled into OUT/world-NN_build (notes on, every fact, dont_know_share 0.3, a seed per copy) and
their rows are shuffled into OUT/dataset/{train,eval}.jsonl + report.json: OUT is then a build folder whose
lore_dir is OUT, and `lorekit train OUT` reads OUT/lorekit.toml (append a [train] table to it first).

What is renamed. The words of every page name and alias ("The Caravan League", "the Rest", "Captain Kell")
get one generated word each per copy (function words such as "the", "of", "at", "beneath" stay; a plural
follows its singular: "Veils" is the word for "Veil" + "s"). A word is *distinctive* when the vault never
writes it in lower case outside tags ("Karsk", "Quorra", "Teshi"'s "Tesh", "Souk", "Walker"): it is replaced
wherever it stands capitalised, so "on the Karsk", "Quorra's", "the Teshi" follow. A *generic* word (the
vault also writes it in lower case: "Council", "Wells", "Band", "Order", "Pass") is replaced only inside a
whole name or alias, so "nineteen wells" and "the pass" stay English. Capitalised words in prose that are
names of no page ("Serin", "the Anvil", "Essa Rindle") are distinctive when they stand mid-sentence and never
in lower case, or next to a distinctive word. Tags and folder names that equal a renamed word follow it in
lower case; an all-caps abbreviation of a name ("CC", the Cairn Count) becomes the new name's initials.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lorekit.lore.vault import load_vault, scan_paths

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prior_lines  # noqa: E402

HERE = Path(__file__).resolve().parent
FUNCTION_WORDS = {"the", "of", "at", "on", "in", "and", "a", "an", "to", "by", "for", "from", "with", "beneath",
                  "under", "over"}
SUFFIXES = ("i",)  # a people named after a place: "Teshi" is "Tesh" + "i"
WORD = re.compile(r"(?<!')[A-Za-z]+")  # the "s" of "Mirrah's" is not a word of its own
COPY_TOML = "[compile]\nmax_facts = 0\ndont_know_share = 0.3\n"

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr",
           "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "m", "th", "nd", "rn", "k"]


@dataclass
class Plan:
    """What a world's copies rename: the words of its names, which are distinctive, its abbreviations."""
    names: list[str]  # page names and aliases, a leading "the" dropped, as written
    words: list[str]  # every renamed word, lower case, singulars before their plurals
    distinctive: set[str]  # lower case; replaced wherever they stand capitalised
    abbreviations: dict[str, list[str]]  # "CC" -> the words of "Cairn Count"
    banned: set[str] = field(default_factory=set)  # lower-case words a generated name must not equal or contain


def pages(root: Path) -> dict[str, str]:
    return {rel: Path(path).read_text(encoding="utf-8") for path, rel in scan_paths(root)}


def prose_words(texts: list[str]) -> set[str]:
    """The lower-case words the pages write, tags (`tags:` lines, `#tag`s) left out."""
    text = "\n".join(texts)
    text = re.sub(r"(?m)^tags:.*$", "", text)
    text = re.sub(r"#[\w/-]+", " ", text)
    return set(re.findall(r"\b[a-z]+\b", text))


def plan_of(world: Path, avoid: Path | None) -> Plan:
    vault = load_vault(world)
    names = sorted({re.sub(r"^(?i:the)\s+", "", n.strip()) for e in vault.entities.values()
                    for n in [e.name, *e.aliases]}, key=lambda n: (-len(n), n))
    texts = list(pages(world).values())
    lower = prose_words(texts)
    name_words = {w.lower() for n in names for w in WORD.findall(n)} - FUNCTION_WORDS
    distinctive = {w for w in name_words if w not in lower}
    distinctive |= _prose_names(texts, lower, distinctive)
    distinctive -= {d + s for d in distinctive for s in SUFFIXES}  # "Teshi" follows "Tesh"
    words = sorted(name_words | distinctive, key=lambda w: (len(w), w))
    body = "\n".join(texts)
    abbreviations = {}
    for n in sorted(names, key=lambda n: (len(WORD.findall(n)), n)):  # "Cairn Count" before "Cup at the Cairn"
        caps = [w for w in WORD.findall(n) if w[0].isupper() and w.lower() not in FUNCTION_WORDS]
        initials = "".join(w[0] for w in caps)
        if len(caps) >= 2 and initials not in abbreviations and re.search(rf"\b{initials}\b", body):
            abbreviations[initials] = caps
    plan = Plan(names, words, distinctive, abbreviations)
    plan.banned = lower | name_words | distinctive | english_words()
    if avoid is not None:
        other = load_vault(avoid)
        plan.banned |= prose_words(list(pages(avoid).values()))
        plan.banned |= {w.lower() for e in other.entities.values() for n in [e.name, *e.aliases]
                        for w in WORD.findall(n)}
    return plan


def english_words() -> set[str]:
    """Lower-case words of the repository's English (README, docs, lorekit's sources and templates): no
    generated name may be one of them ("Seas", "Fund")."""
    repo = HERE.parent
    files = [repo / "README.md", *(repo / "docs").glob("*.md"), *(repo / "lorekit").rglob("*.py")]
    return {w for f in files if f.is_file() for w in re.findall(r"\b[a-z]+\b", f.read_text(encoding="utf-8"))}


def _prose_names(texts: list[str], lower: set[str], distinctive: set[str]) -> set[str]:
    """Capitalised words of the prose that name no page: mid-sentence and never lower case, or next to a
    distinctive word ("Essa Rindle", "Tavi Brask")."""
    text = "\n".join(texts)
    found = {w.lower() for w in re.findall(r"(?<=[a-z,;] )([A-Z][a-z]+)\b", text)}
    found = {w for w in found if w not in lower and w not in FUNCTION_WORDS}
    known = distinctive | found
    for a, b in re.findall(r"\b([A-Z][a-z]+) (?=([A-Z][a-z]+)\b)", text):
        for w, other in ((a, b), (b, a)):
            if other.lower() in known and w.lower() not in lower and w.lower() not in FUNCTION_WORDS:
                found.add(w.lower())
    return found


def fresh_word(rng: random.Random, used: set[str], banned: set[str]) -> str:
    """A pronounceable word no copy has used, that neither is nor contains a banned word of 4+ letters."""
    while True:
        n = rng.choice([2, 2, 2, 3])
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n)) + rng.choice(_CODAS)
        stems = {word, word.removesuffix("s"), word.removesuffix("es"), word.removesuffix("ed")}
        if not 4 <= len(word) <= 9 or word in used or stems & banned:
            continue
        if any(b in word for b in banned if len(b) >= 4):
            continue
        used.add(word)
        return word


class Renamer:
    """One copy's names: every renamed word -> its generated word; `text`, `tag`, `path` apply them."""

    def __init__(self, plan: Plan, rng: random.Random, used: set[str]):
        self.names = plan.names
        self.map: dict[str, str] = {}
        for w in plan.words:  # singulars first: a plural follows its singular
            if w.endswith("s") and w[:-1] in self.map:
                self.map[w] = self.map[w[:-1]] + "s"
            else:
                self.map[w] = fresh_word(rng, used, plan.banned)
        self.abbreviations = {a: "".join(self.map[w.lower()][0].upper() for w in ws)
                              for a, ws in plan.abbreviations.items()}
        suffix = f"(?:{'|'.join(SUFFIXES)})?"
        keys = [(n, re.escape(n)) for n in plan.names] + [(a, re.escape(a)) for a in self.abbreviations]
        keys += [(w.capitalize(), re.escape(w.capitalize()) + suffix) for w in plan.distinctive]
        keys.sort(key=lambda k: (-len(k[0]), k[0]))  # longest first: "Karsk Plateau" before "Karsk"
        self.pattern = re.compile(rf"(?<!\w)(?:{'|'.join(k[1] for k in keys)})(?!\w)")

    def word(self, w: str) -> str:
        low = w.lower()
        if low in FUNCTION_WORDS:
            return w
        if w in self.abbreviations:
            return self.abbreviations[w]
        new = self.map.get(low)
        if new is None:
            stem = next((low[:-len(s)] for s in SUFFIXES if low.endswith(s) and low[:-len(s)] in self.map), None)
            if stem is None:
                return w
            new = self.map[stem] + low[len(stem):]
        if w.isupper() and len(w) > 1:
            return new.upper()
        return new.capitalize() if w[0].isupper() else new

    def name(self, text: str) -> str:
        return WORD.sub(lambda m: self.word(m.group()), text)

    def tag(self, tag: str) -> str:
        return "/".join(self.map.get(p.lower(), p) for p in tag.split("/"))

    def text(self, text: str) -> str:
        text = self.pattern.sub(lambda m: self.name(m.group()), text)
        text = re.sub(r"(?m)^(tags:)(.*)$", lambda m: m.group(1) + re.sub(
            r"[A-Za-z][\w/-]*", lambda t: self.tag(t.group()), m.group(2)), text)
        return re.sub(r"(?<![\w\[&])#([A-Za-z][\w/-]*)", lambda m: "#" + self.tag(m.group(1)), text)

    def path(self, rel: str) -> str:
        parts = rel.split("/")
        out = [self.map.get(p, self.text(p)) if p.islower() else self.text(p) for p in parts[:-1]]
        return "/".join([*out, self.text(parts[-1][:-3]) + ".md"])


STOCK_LINE = re.compile(r'^(\s*)(dont_know|refuse):\s*".*"\s*$', re.MULTILINE)


def recast(text: str, rng: random.Random, pools: dict[str, list[str]]) -> str:
    """The page with its NPC's `dont_know` and `refuse` lines drawn from bench/prior_lines.py (each line
    taken from `pools` once a copy, so no two NPCs of a copy share one)."""
    def pick(m: re.Match) -> str:
        pool = pools[m.group(2)]
        return f'{m.group(1)}{m.group(2)}: "{pool.pop(rng.randrange(len(pool)))}"'
    return STOCK_LINE.sub(pick, text)


def write_copy(world: Path, dest: Path, renamer: Renamer, seed: int, lines: random.Random | None = None) -> None:
    pools = {"dont_know": list(prior_lines.DONT_KNOW), "refuse": list(prior_lines.REFUSE)}
    for rel, text in pages(world).items():
        target = dest / renamer.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = renamer.text(text)
        target.write_text(recast(text, lines, pools) if lines else text, encoding="utf-8")
    (dest / "lorekit.toml").write_text(COPY_TOML + f"seed = {seed}\n", encoding="utf-8")


def make_copies(out: Path, copies: int, seed: int, world: Path, avoid: Path | None,
                recast_lines: bool = False) -> list[tuple[Path, Renamer]]:
    plan = plan_of(world, avoid)
    rng, used = random.Random(f"prior-worlds:{seed}"), set()
    made = []
    for i in range(1, copies + 1):
        dest = out / f"world-{i:02d}"
        if dest.exists():
            shutil.rmtree(dest)
        renamer = Renamer(plan, rng, used)
        write_copy(world, dest, renamer, seed * 1000 + i,
                   random.Random(f"prior-lines:{seed}:{i}") if recast_lines else None)
        errors = load_vault(dest).errors
        if errors:
            raise SystemExit(f"{dest}: the renamed copy does not validate:\n" + "\n".join(map(str, errors)))
        made.append((dest, renamer))
    return made


def compile_copies(out: Path, made: list[tuple[Path, Renamer]], seed: int) -> dict:
    """Compile every copy, then shuffle all their rows into OUT/dataset/ with a report.json for `lorekit train`."""
    from lorekit.compile import load_config, run

    rows: dict[str, list[bytes]] = {"train.jsonl": [], "eval.jsonl": []}
    reports = []
    for dest, _ in made:
        result = run(dest, dest.with_name(dest.name + "_build"), load_config(dest, {"cache": False}))
        reports.append(result.report)
        for name in rows:
            rows[name] += (result.out / "dataset" / name).read_bytes().splitlines(keepends=True)
    for name, lines in rows.items():
        random.Random(f"{seed}:shuffle:{name}").shuffle(lines)
    files = {name: b"".join(lines) for name, lines in rows.items()}
    report = merged_report(out, reports, hashlib.sha256(files["train.jsonl"] + files["eval.jsonl"]).hexdigest())
    report["tokens_estimate"] = tokens_estimate(rows["train.jsonl"])
    files["report.json"] = (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    dataset = out / "dataset"
    shutil.rmtree(dataset, ignore_errors=True)
    dataset.mkdir(parents=True)
    for name, data in files.items():
        (dataset / name).write_bytes(data)
    (out / "lorekit.toml").write_text(COPY_TOML, encoding="utf-8")  # what `lorekit train OUT` reads; add [train]
    return report


def merged_report(out: Path, reports: list[dict], sha: str) -> dict:
    def total(key: str) -> int:
        return sum(r[key] for r in reports)

    def kinds(split: str) -> dict[str, int]:
        return dict(sorted(sum((Counter(r["rows_by_kind"][split]) for r in reports), Counter()).items()))

    return {
        "lore_dir": str(out.resolve()), "dataset_sha256": sha, "format": reports[0]["format"],
        "copies": [{"lore_dir": r["lore_dir"], "rows": r["rows"], "dataset_sha256": r["dataset_sha256"]}
                   for r in reports],
        "pages": total("pages"), "entities": total("entities"), "facts": total("facts"),
        "rows": {"train": sum(r["rows"]["train"] for r in reports), "eval": sum(r["rows"]["eval"] for r in reports)},
        "rows_by_kind": {"train": kinds("train"), "eval": kinds("eval")},
        "npcs": [n for r in reports for n in r["npcs"]],
        "warnings": [w for r in reports for w in r["warnings"]],
        "config": {k: v for k, v in reports[0]["config"].items() if k != "seed"},
    }


def tokens_estimate(lines: list[bytes]) -> int:
    """About 4 characters a token, over every turn of every row."""
    chars = 0
    for line in lines:
        row = json.loads(line)
        turns = row.get("conversations") or row.get("messages") or []
        chars += sum(len(t.get("value") or t.get("content") or "") for t in turns)
    return chars // 4


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the copies (and, with --compile, the build)")
    ap.add_argument("--copies", type=int, required=True, help="how many renamed copies")
    ap.add_argument("--seed", type=int, default=0, help="seed of the names, the compile seeds and the shuffle")
    ap.add_argument("--world", type=Path, default=HERE / "prior_world", help="the world to copy (default: %(default)s)")
    ap.add_argument("--avoid", type=Path, default=HERE.parent / "sample_lore",
                    help="a vault whose words no generated name may use (default: %(default)s)")
    ap.add_argument("--compile", action="store_true", help="compile every copy and merge the rows into OUT/dataset")
    ap.add_argument("--recast", action="store_true",
                    help="give every NPC of every copy other 'I don't know' and refusal lines (bench/prior_lines.py)")
    args = ap.parse_args(argv)
    if args.copies < 1:
        ap.error("--copies must be at least 1")
    t0 = time.perf_counter()
    made = make_copies(args.out, args.copies, args.seed, args.world, args.avoid, args.recast)
    first = made[0][1]
    print(f"{len(made)} copies of {args.world} in {args.out} ({time.perf_counter() - t0:.1f} s); per copy "
          f"{len(first.names)} page names and aliases, {len(first.map)} words renamed, e.g. "
          + ", ".join(f"{n} -> {first.name(n)}" for n in [n for n in ("Karsk Plateau", "Caravan League", "Quorra")
                                                            if n in first.names] or first.names[:3]))
    if args.compile:
        t1 = time.perf_counter()
        report = compile_copies(args.out, made, args.seed)
        print(f"compiled in {time.perf_counter() - t1:.1f} s: {report['rows']['train']:,} train rows, "
              f"{report['rows']['eval']:,} eval rows, ~{report['tokens_estimate']:,} train tokens; "
              f"'I don't know' rows {sum(report['rows_by_kind']['train'].get(k, 0) for k in ('unknown', 'absent')):,}; "
              f"{len(report['warnings'])} warnings -> {args.out / 'dataset'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
