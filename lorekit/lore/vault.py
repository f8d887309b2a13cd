"""Load a vault: scan pages, build the entity graph, resolve links, collect every problem.

`load_vault` never raises on bad lore. Pages are parsed by `lorekit.lore.page`, whose results can
be reused from a cache keyed by content hash (`page_cache`), so only edited pages are re-parsed.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyascii import anyascii

from lorekit.lore.files import hidden, is_page, is_readme
from lorekit.lore.links import Link, find_links, page_name, parse_value, path_keys, resolve_target
from lorekit.lore.model import NPC_FIELDS, PERSONA_ONLY, RESERVED, TYPES, Entity, Npc
from lorekit.lore.page import ParsedPage, content_hash, parse_page
from lorekit.lore.problems import Problem, error, warning

# Bump when parse_page reads the same bytes differently: cached parses (keyed by content) are dropped.
PARSER_VERSION = "p4"  # p3: `#tags` in inline code and fenced blocks (in quotes too) are code; p4: links too


def slug(name: str) -> str:
    """The id of a name: lower-case ASCII letters, digits and hyphens. Other letters are transliterated
    (anyascii): "Zoë Varga" -> `zoe-varga`, "Ælfric" -> `aelfric`, "Владимир" -> `vladimir`; each
    syllable of a script without capitals (Chinese, Korean) is a word of its own: "李白" -> `li-bai`."""
    if not name.isascii():
        name = "".join(_ascii(ch) for ch in name)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "page"


def _ascii(ch: str) -> str:
    if ch.isascii():
        return ch
    text = anyascii(ch)
    if len(text) > 1 and text[0].isupper() and ch.upper() == ch.lower():  # a syllable ("Li", "Bai")
        return f" {text} "
    return text


@dataclass
class Vault:
    root: Path
    pages: list[ParsedPage] = field(default_factory=list)
    entities: dict[str, Entity] = field(default_factory=dict)  # id -> entity, in page order
    npcs: dict[str, Npc] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    index: dict[str, str] = field(default_factory=dict)  # lower-case name, alias or file name -> id
    paths: dict[str, str | None] = field(default_factory=dict)  # lower-case page path (and its tails) -> id
    _npc_tables: dict[str, tuple[dict, dict]] = field(default_factory=dict)  # NPC id -> (its fields, their key paths)
    _names: dict[str, str] = field(default_factory=dict)  # lower-case key -> name as written

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def resolve(self, name: str) -> Entity | None:
        eid = resolve_target(name, self.index, self.paths)
        return self.entities.get(eid) if eid else None

    def suggest(self, name: str) -> str:
        close = difflib.get_close_matches(page_name(name).lower(), list(self.index), n=1, cutoff=0.6)
        return self._names[close[0]] if close else ""

    def public_ids(self) -> set[str]:
        return {e.id for e in self.entities.values() if e.public}

    def mentions(self, text: str) -> bool:
        """Whether `text` (a name) appears anywhere in the vault's names or prose, case-insensitively."""
        found = text.lower() in self._corpus()
        if hasattr(self, "mention_log"):  # the incremental compiler replays these answers
            self.mention_log.append((text, found))
        return found

    def _corpus(self) -> str:
        if not hasattr(self, "_corpus_text"):
            self._corpus_text = "\n".join([*self.index, *(entity_corpus(e) for e in self.entities.values())])
        return self._corpus_text


def entity_corpus(e: Entity) -> str:
    """An entity's prose and values in lower case: where a name counts as "mentioned"."""
    parts = [e.summary.lower()]
    parts.extend(s.text.lower() for s in e.sections)
    parts.extend(v.text.lower() for vs in e.fields.values() for v in vs)
    return "\n".join(parts)


def scan(root: Path) -> list[Path]:
    """Every `.md` page under root, skipping files and folders that start with `.` or `_`."""
    return [Path(path) for path, _ in scan_paths(root)]


def scan_paths(root: Path | str) -> list[tuple[str, str]]:
    """(path, path relative to root with `/`) of every page, sorted by the relative path."""
    out = []
    base = len(str(root).rstrip(os.sep)) + 1
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not hidden(d)]
        for f in files:
            path = os.path.join(folder, f)
            rel = path[base:].replace(os.sep, "/")
            if is_page(rel):
                out.append((path, rel))
    out.sort(key=lambda p: p[1])
    return out


def load_vault(root: Path | str, page_cache: Any | None = None) -> Vault:
    """Parse every page and build the graph. `page_cache` (a `lorekit.compile.cache.Cache`, or a
    plain dict from content hash to parsed page) lets unchanged pages skip parsing; one with an
    `entities` dict (the server's, lorekit.serve.personas.PageCache) also keeps each page's entity."""
    root = Path(root)
    vault = Vault(root=root.resolve())
    if not root.is_dir():
        vault.problems.append(error(str(root), None, "lore folder not found", "pass the folder holding your .md pages"))
        return vault
    pages = page_cache.pages if hasattr(page_cache, "pages") else page_cache
    for path, rel in scan_paths(root):
        page = _cached_page(page_cache, path, rel)
        if page is None:
            with open(path, "rb") as f:
                data = f.read()
            key = content_hash(data) + ":" + PARSER_VERSION + ":" + rel
            page = pages.get(key) if pages is not None else None
            if page is None:
                page = parse_page(rel, data)
                if pages is not None:
                    pages[key] = page
            _remember(page_cache, path, rel, key)
        if readme_notes(page):
            continue
        vault.pages.append(page)
        vault.problems.extend(page.problems)
    made = getattr(page_cache, "entities", None)
    for page in vault.pages:
        _add_entity(vault, page, made)
    if made is not None:  # forget the entities of pages that are gone or changed
        live = {id(page) for page in vault.pages}
        for key in [k for k in made if k not in live]:
            del made[key]
    _check_links(vault)
    for entity in vault.entities.values():
        _build_npc(vault, entity)
    for entity in vault.entities.values():
        _check_known_by(vault, entity)
    _resolve_knowledge(vault)
    vault.problems.sort(key=Problem.sort_key)
    return vault


def readme_notes(page: ParsedPage) -> bool:
    """A README that is notes for people, not a page: its front matter, if any, declares no `type`.
    Front matter that cannot be read keeps it a page, so the error is reported rather than hidden."""
    if not is_readme(page.path) or "type" in page.meta:
        return False
    return not (page.has_front_matter and page.problems)


def _cached_page(cache: Any, path: str, rel: str) -> ParsedPage | None:
    """The cached parse of a page whose size and mtime are unchanged since the last compile."""
    if not hasattr(cache, "stats"):
        return None
    known = cache.stats.get(rel)
    st = os.stat(path)
    if known is None or known[2].split(":")[1:2] != [PARSER_VERSION] or known[0] != st.st_mtime_ns or known[1] != st.st_size or st.st_mtime_ns >= cache.trusted_before:
        return None
    page = cache.pages.get(known[2])
    if page is not None:
        cache.used_pages.add(known[2])
        cache.new_stats[rel] = known
    return page


def _remember(cache: Any, path: str, rel: str, key: str) -> None:
    if hasattr(cache, "stats"):
        st = os.stat(path)
        cache.used_pages.add(key)
        cache.new_stats[rel] = (st.st_mtime_ns, st.st_size, key)


def _add_entity(vault: Vault, page: ParsedPage, made: dict | None = None) -> None:
    entity = _entity(page, vault.problems, made)
    if entity.id in vault.entities:
        other = vault.entities[entity.id]
        if other.name.lower() == entity.name.lower():
            vault.problems.append(error(page.path, page.line_of("name") or 1,
                                        f"duplicate name `{entity.name}`: {other.page} already defines `{other.name}`",
                                        "give each page a unique name"))
        else:
            vault.problems.append(error(page.path, page.line_of("id") or page.line_of("name") or 1,
                                        f"`{entity.name}` gives the id `{entity.id}`, which `{other.name}` "
                                        f"({other.page}) already has",
                                        "rename one of the two pages, or give one an `id:` line of its own, "
                                        "in lower-case letters, digits and hyphens"))
        return
    _index(vault, entity, page)
    vault.entities[entity.id] = entity
    if page.has_front_matter and not (entity.fields or entity.summary or any(s.text for s in entity.sections)):
        if not page.problems:
            vault.problems.append(warning(page.path, 1, f"page `{entity.name}` states no facts",
                                          "add fields, a first paragraph or sections"))


def _entity(page: ParsedPage, problems: list[Problem], made: dict | None) -> Entity:
    """`entity_from_page`, reused from `made` (id(page) -> (page, entity, its problems)) while the
    parsed page is the same object. Each load gets a copy: the graph adds `known_by` and `npc`."""
    if made is None:
        return entity_from_page(page, problems)
    hit = made.get(id(page))
    if hit is None or hit[0] is not page:
        found: list[Problem] = []
        hit = made[id(page)] = (page, entity_from_page(page, found), found)
    problems.extend(hit[2])
    entity = copy.copy(hit[1])
    entity.known_by, entity.npc = [], None
    return entity


def entity_from_page(page: ParsedPage, problems: list[Problem]) -> Entity:
    """The entity a page defines, from the page alone (links are resolved later, by name)."""
    meta, path = page.meta, page.path
    stem = Path(path).stem
    name = meta.get("name", stem)
    if not isinstance(name, str) or not name.strip():
        problems.append(error(path, page.line_of("name") or 1, "missing required field `name` (it is empty)",
                              f"write `name: {stem}` or remove the line to use the file name"))
        name = stem
    name = name.strip()
    etype = _check_type(page, problems)
    entity = Entity(id=_page_id(page, name, problems), name=name, type=etype, page=path, tags=_tags(page),
                    summary=page.summary, summary_line=page.summary_line,
                    summary_targets=page.summary_targets, sections=page.sections)
    values = dict(meta)
    if isinstance(values.get("aliases"), str):  # `aliases: Mara, the Ash Widow` is a list too
        values["aliases"] = [a.strip() for a in values["aliases"].split(",") if a.strip()]
    entity.aliases = [str(a).strip() for a in _as_list(values.get("aliases")) if str(a).strip()]
    secret = meta.get("secret", None)
    if secret is not None and not isinstance(secret, bool):
        problems.append(error(path, page.line_of("secret"), "`secret` must be true or false", "write `secret: true`"))
    entity.secret = secret is True or (secret is None and "secret" in _front_matter_tags(page))
    article = meta.get("article_in_name", False)
    if not isinstance(article, bool):
        problems.append(error(path, page.line_of("article_in_name"), "`article_in_name` must be true or false",
                              "write `article_in_name: true` to keep a leading \"The\" capitalised mid-sentence"))
    entity.article_in_name = article is True
    flat_npc = meta.get("npc") is True
    for key, raw in values.items():
        if key in RESERVED or raw is None or key in PERSONA_ONLY or (flat_npc and key == "style"):
            continue  # persona fields are read by _build_npc, never taught as facts
        if isinstance(raw, dict) or (isinstance(raw, list) and any(isinstance(i, (dict, list)) for i in raw)):
            problems.append(warning(path, page.line_of(key), f"field `{key}` holds a nested table; it is ignored",
                                    "use text, a [[link]] or a list of these"))
            continue
        items = [page.key_lines.get(f"{key}[{i}]", 0) for i in range(len(raw))] \
            if isinstance(raw, list) and raw is meta.get(key) else None
        parts = parse_value(raw, page.line_of(key) or 1, items)
        if parts:
            entity.fields[key] = parts
            entity.field_lines[key] = page.line_of(key) or 1
    for key, found in page.secret_fields.items():
        if key not in RESERVED and key not in NPC_FIELDS:
            entity.secret_fields[key] = parse_value([v for v, _ in found], found[0][1], [line for _, line in found])
    return entity


def _page_id(page: ParsedPage, name: str, problems: list[Problem]) -> str:
    """The page's id: from its name, or from an `id:` line that sets one."""
    raw = page.meta.get("id")
    if raw is None:
        return slug(name)
    text = str(raw).strip()
    if not text or slug(text) != text:
        problems.append(error(page.path, page.line_of("id"), f"`id: {raw}` is not an id",
                              f"use lower-case letters, digits and hyphens: `id: {slug(text or name)}`"))
        return slug(text or name)
    return text


def _check_type(page: ParsedPage, problems: list[Problem]) -> str:
    if page.problems:  # unreadable or malformed: already reported, do not pile up more
        return str(page.meta.get("type") or "lore")
    raw = page.meta.get("type")
    if raw is None or not str(raw).strip():
        problems.append(error(page.path, page.line_of("type") or 1, "missing `type`",
                              f"add `type: character` to the front matter (one of: {', '.join(TYPES)})"))
        return "lore"
    etype = str(raw).strip().lower()
    if etype not in TYPES:
        close = difflib.get_close_matches(etype, TYPES, n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        problems.append(error(page.path, page.line_of("type"), f"unknown type `{raw}`",
                              f"{hint}use one of: {', '.join(TYPES)}"))
        return "lore"
    return etype


def _tags(page: ParsedPage) -> list[str]:
    tags = _front_matter_tags(page) + [t.lower() for t in page.tags]
    return sorted({t for t in tags if t})


def _front_matter_tags(page: ParsedPage) -> list[str]:
    """The `tags` property: a YAML list, or one string of tags (`tags: guild, faction/ash`)."""
    out = []
    for item in _as_list(page.meta.get("tags")):
        if isinstance(item, (dict, list)) or item is None:
            continue
        parts = re.split(r"[,\s]+", item) if isinstance(item, str) else [str(item)]
        out += [p.strip().lstrip("#").lower() for p in parts if p.strip().lstrip("#")]
    return out


def has_tag(tags: list[str], tag: str) -> bool:
    """Whether `tags` hold `tag` or a tag nested under it (`#faction` holds `faction/guild`)."""
    tag = tag.lower()
    return any(t == tag or t.startswith(tag + "/") for t in tags)


def _tagged(vault: Vault, tag: str) -> list[Entity]:
    """The entities `has_tag` holds `tag` for, from an index made once per vault (each NPC's
    `knows: ["#tag"]` asked every page: 0.2 s at 10,000 pages and 20 NPCs)."""
    if not hasattr(vault, "_by_tag"):
        index: dict[str, list[Entity]] = {}
        for e in vault.entities.values():
            keys = set()
            for t in e.tags:  # a tag and each tag it is nested under: `faction/guild` is `faction` too
                parts = t.split("/")
                keys.update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
            for key in keys:
                index.setdefault(key, []).append(e)
        vault._by_tag = index
    return vault._by_tag.get(tag, [])


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _index(vault: Vault, entity: Entity, page: ParsedPage) -> None:
    keys = [(entity.name, "name"), (Path(entity.page).stem, None)] + [(a, "aliases") for a in entity.aliases]
    for key, field_name in keys:
        low = key.lower()
        owner = vault.index.get(low)
        if owner is None:
            vault.index[low], vault._names[low] = entity.id, key
        elif owner != entity.id and field_name is not None:
            other = vault.entities[owner]
            what = "alias" if field_name == "aliases" else "name"
            vault.problems.append(error(page.path, page.line_of(field_name) or 1,
                                        f"duplicate {what} `{key}`: already used by `{other.name}` ({other.page})",
                                        "names and aliases must be unique across the vault"))
    for key in path_keys(entity.page):  # a tail that two pages share names neither: None
        vault.paths[key] = entity.id if key not in vault.paths else None


def _check_links(vault: Vault) -> None:
    for page in vault.pages:
        for link in page.links:
            if link.key and link.key.startswith("npc.knows") or link.key in ("known_by", "knows"):
                continue  # checked with their own, more specific messages
            _check_link(vault, page, link)


def _check_link(vault: Vault, page: ParsedPage, link: Link) -> Entity | None:
    if not link.target:  # [[#Heading]] inside the same page
        return None
    target = vault.resolve(link.target)
    if target is None:
        hint = vault.suggest(link.target)
        fix = f"did you mean [[{hint}]]?" if hint else f"create a page `{link.target}.md` or fix the link"
        where = f" in `{link.key}`" if link.key else ""
        vault.problems.append(error(page.path, link.line, f"link to missing page [[{link.target}]]{where}", fix))
        return None
    if link.heading and not link.heading.startswith("^"):  # `[[Page#^abc123]]` names a block, not a heading
        headings = [s.heading for s in target.sections]
        if link.heading.lower() not in (h.lower() for h in headings):
            close = difflib.get_close_matches(link.heading, headings, n=1)
            fix = f"did you mean [[{link.target}#{close[0]}]]?" if close else f"add `## {link.heading}` to {target.page}"
            vault.problems.append(warning(page.path, link.line,
                                          f"[[{link.target}#{link.heading}]]: no such heading in {target.page}", fix))
    return target


_NPC_TEXT = ("voice", "greeting", "farewell", "style", "refuse", "dont_know")


def _build_npc(vault: Vault, entity: Entity) -> None:
    page = _page(vault, entity)
    _misplaced_npc_fields(vault, page)
    raw = page.meta.get("npc")
    flat = [k for k in PERSONA_ONLY if k in page.meta]
    if raw is None or raw is False:
        if flat:
            _not_an_npc(vault, entity, page, flat)
        return
    line = page.line_of("npc")
    if entity.type != "character":
        vault.problems.append(error(entity.page, line, f"`npc` on a {entity.type} page",
                                    "only `type: character` pages can be NPCs"))
        return
    if raw is True:  # the flat form: NPC fields at the top level, beside `npc: true`
        table, paths = {k: page.meta[k] for k in NPC_FIELDS if k in page.meta}, {k: k for k in NPC_FIELDS}
    elif isinstance(raw, dict):
        table, paths = dict(raw), {k: f"npc.{k}" for k in raw}
        if flat:
            where = ", ".join(f"`{k}` (line {page.line_of(k)})" for k in flat)
            vault.problems.append(error(entity.page, page.line_of(flat[0]),
                                        f"NPC fields both under `npc:` (line {line}) and at the top level: {where}",
                                        "keep one form: move them under `npc:`, or write `npc: true` and keep "
                                        "every NPC field at the top level"))
            for k in flat:  # read them anyway, so the error above is the only one
                if k not in table:
                    table[k], paths[k] = page.meta[k], k
        _unknown_npc_fields(vault, entity, page, raw)
    else:
        vault.problems.append(error(entity.page, line, "`npc` must be a table (voice, greeting, knows, ...) or `true`",
                                    "write `npc:` followed by indented `voice: ...` and `knows: [...]` lines"))
        return
    vault._npc_tables[entity.id] = (table, paths)
    npc = Npc(id=entity.id, name=entity.name, page=entity.page)
    for key in _NPC_TEXT:
        value = table.get(key)
        setattr(npc, key, "" if value is None else " ".join(str(value).split()))
    npc.openers = [str(o).strip() for o in _as_list(table.get("openers")) if str(o).strip()]
    if not npc.voice:
        shown = paths.get("voice", "voice" if raw is True else "npc.voice")
        vault.problems.append(error(entity.page, page.line_of(shown) or line,
                                    f"missing required field `{shown}` for NPC `{entity.name}`",
                                    "describe how they speak: `voice: Dry and clipped.`, "
                                    + ("at the top level beside `npc: true`" if raw is True else "under `npc:`")))
    entity.npc = npc
    vault.npcs[npc.id] = npc


def _unknown_npc_fields(vault: Vault, entity: Entity, page: ParsedPage, table: dict) -> None:
    for key in table:
        if key in NPC_FIELDS:
            continue
        fix = f"use one of: {', '.join(sorted(NPC_FIELDS))}"
        if key not in _NPC_TYPO_HINTS and not difflib.get_close_matches(key, NPC_FIELDS, n=1, cutoff=0.75):
            fix = f"page fields such as `{key}` go at the top level, outside `npc:` (NPC fields are: " \
                  f"{', '.join(sorted(NPC_FIELDS))})"
        vault.problems.append(error(entity.page, page.line_of(f"npc.{key}"), f"unknown npc field `{key}`", fix))


_NPC_TYPO_HINTS = {"know", "knowledge", "secret", "greet", "greetings", "dontknow", "refusal", "opener", "goodbye",
                   "farewells", "bye"}


def _not_an_npc(vault: Vault, entity: Entity, page: ParsedPage, keys: list[str]) -> None:
    """Persona fields on a page that is not an NPC are not read: say so, rather than teach them as facts."""
    quoted = [f"`{k}`" for k in keys]
    names = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
    why = "it says `npc: false`" if page.meta.get("npc") is False else "it has no `npc: true`"
    if entity.type == "character":
        fix = f"add `npc: true` to make {entity.name} an NPC, or remove {names}"
    else:
        fix = f"only `type: character` pages can be NPCs: remove {names} or rename the field"
    vault.problems.append(error(entity.page, page.line_of(keys[0]),
                                f"{names} {'is an NPC field' if len(keys) == 1 else 'are NPC fields'}, but "
                                f"`{entity.name}` is not an NPC ({why}), so {'it is' if len(keys) == 1 else 'they are'} "
                                "not read", fix))


def _misplaced_npc_fields(vault: Vault, page: ParsedPage) -> None:
    """`persona: {voice: ...}` and the like: an NPC field inside a table other than `npc:` is never read."""
    for path, line in page.key_lines.items():
        parts = path.split(".")
        if len(parts) > 1 and parts[0] != "npc" and "[" not in parts[-1] and parts[-1] in NPC_FIELDS:
            vault.problems.append(error(page.path, line, f"`{path}` is not read: NPC fields go under `npc:`, "
                                        "or at the top level beside `npc: true`",
                                        f"move `{parts[-1]}:` under `npc:`, or to the top level"))


def _npc_refs(vault: Vault, entity: Entity, key: str) -> list[tuple[str, int]]:
    """The items of the NPC's `knows` / `secrets`: (text, line)."""
    page = _page(vault, entity)
    table, paths = vault._npc_tables.get(entity.id, ({}, {}))
    path = paths.get(key, f"npc.{key}")
    base = page.line_of(path) or page.line_of("npc") or 1
    return [(str(item).strip(), page.key_lines.get(f"{path}[{i}]", base)) for i, item in enumerate(_as_list(table.get(key)))
            if item is not None and str(item).strip()]


def _resolve_ref(vault: Vault, entity: Entity, text: str, line: int, key: str) -> set[str] | None:
    """One `knows`/`secrets` item: "*", "#tag", "[[Page]]" or a plain page name -> entity ids."""
    if text == "*":
        return vault.public_ids()
    if text.startswith("#"):
        tag = text[1:].lower()
        ids = {e.id for e in _tagged(vault, tag) if e.public}
        if not ids:
            vault.problems.append(warning(entity.page, line, f"`npc.{key}`: no page has the tag #{tag}",
                                          "tag pages with `tags: [...]` or fix the tag"))
        return ids
    links = find_links(text, line, f"npc.{key}") or [Link(text.strip("[]"), None, None, line, key=f"npc.{key}")]
    ids = set()
    for link in links:
        target = _check_link(vault, _page(vault, entity), link)
        if target is not None:
            ids.add(target.id)
    return ids


def _resolve_knowledge(vault: Vault) -> None:
    restricted = {e.id: set(e.known_by) for e in vault.entities.values() if e.known_by}
    for npc in vault.npcs.values():
        entity = vault.entities[npc.id]
        knows: set[str] = set()
        for text, line in _npc_refs(vault, entity, "knows"):
            knows |= _resolve_ref(vault, entity, text, line, "knows") or set()
        secrets: set[str] = set()
        for text, line in _npc_refs(vault, entity, "secrets"):
            secrets |= _resolve_ref(vault, entity, text, line, "secrets") or set()
        knows.discard(npc.id)
        if not knows and not secrets:
            page = _page(vault, entity)
            path = vault._npc_tables.get(npc.id, ({}, {}))[1].get("knows", "npc.knows")
            vault.problems.append(error(entity.page, page.line_of(path) or page.line_of("npc"),
                                        f"NPC `{npc.name}` knows nothing beyond itself",
                                        f"list pages in `{path}`, e.g. knows: [\"[[Ash Guild]]\"], \"#tag\" or \"*\""))
        knows.add(npc.id)
        knows |= {eid for eid, who in restricted.items() if npc.id in who}
        knows -= {eid for eid, who in restricted.items() if npc.id not in who}
        npc.knows = knows - secrets
        npc.secrets = secrets - {npc.id}


def _check_known_by(vault: Vault, entity: Entity) -> None:
    page = _page(vault, entity)
    raw = page.meta.get("known_by")
    if raw is None:
        return
    for i, item in enumerate(_as_list(raw)):
        line = page.key_lines.get(f"known_by[{i}]", page.line_of("known_by"))
        text = str(item)
        links = find_links(text, line, "known_by") or [Link(text.strip(), None, None, line, key="known_by")]
        for link in links:
            target = _check_link(vault, page, link)
            if target is None:
                continue
            if target.npc is None:
                vault.problems.append(error(entity.page, line, f"`known_by` names `{target.name}`, who is not an NPC",
                                            "list only pages with an `npc:` table"))
            else:
                entity.known_by.append(target.id)


def _page(vault: Vault, entity: Entity) -> ParsedPage:
    if not hasattr(vault, "_by_path"):
        vault._by_path = {p.path: p for p in vault.pages}
    return vault._by_path[entity.page]
