"""Load a vault: scan pages, build the entity graph, resolve links, collect every problem.

`load_vault` never raises on bad lore. Pages are parsed by `lorekit.lore.page`, whose results can
be reused from a cache keyed by content hash (`page_cache`), so only edited pages are re-parsed.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorekit.lore.files import hidden, is_page
from lorekit.lore.links import Link, find_links, page_name, parse_value, path_keys, resolve_target
from lorekit.lore.model import RESERVED, TYPES, Entity, Npc
from lorekit.lore.page import ParsedPage, content_hash, parse_page
from lorekit.lore.problems import Problem, error, warning


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "page"


@dataclass
class Vault:
    root: Path
    pages: list[ParsedPage] = field(default_factory=list)
    entities: dict[str, Entity] = field(default_factory=dict)  # id -> entity, in page order
    npcs: dict[str, Npc] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    index: dict[str, str] = field(default_factory=dict)  # lower-case name, alias or file name -> id
    paths: dict[str, str | None] = field(default_factory=dict)  # lower-case page path (and its tails) -> id
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
    plain dict from content hash to parsed page) lets unchanged pages skip parsing."""
    root = Path(root)
    vault = Vault(root=root.resolve())
    if not root.is_dir():
        vault.problems.append(error(str(root), None, "lore folder not found", "pass the folder holding your .md pages"))
        return vault
    pages = page_cache.pages if hasattr(page_cache, "pages") else page_cache
    for path in scan(root):
        rel = path.relative_to(root).as_posix()
        page = _cached_page(page_cache, path, rel)
        if page is None:
            data = path.read_bytes()
            key = content_hash(data) + ":" + rel
            page = pages.get(key) if pages is not None else None
            if page is None:
                page = parse_page(rel, data)
                if pages is not None:
                    pages[key] = page
            _remember(page_cache, path, rel, key)
        vault.pages.append(page)
        vault.problems.extend(page.problems)
    for page in vault.pages:
        _add_entity(vault, page)
    _check_links(vault)
    for entity in vault.entities.values():
        _build_npc(vault, entity)
    for entity in vault.entities.values():
        _check_known_by(vault, entity)
    _resolve_knowledge(vault)
    vault.problems.sort(key=Problem.sort_key)
    return vault


def _cached_page(cache: Any, path: Path, rel: str) -> ParsedPage | None:
    """The cached parse of a page whose size and mtime are unchanged since the last compile."""
    if not hasattr(cache, "stats"):
        return None
    known = cache.stats.get(rel)
    st = path.stat()
    if known is None or known[0] != st.st_mtime_ns or known[1] != st.st_size or st.st_mtime_ns >= cache.trusted_before:
        return None
    page = cache.pages.get(known[2])
    if page is not None:
        cache.used_pages.add(known[2])
        cache.new_stats[rel] = known
    return page


def _remember(cache: Any, path: Path, rel: str, key: str) -> None:
    if hasattr(cache, "stats"):
        st = path.stat()
        cache.used_pages.add(key)
        cache.new_stats[rel] = (st.st_mtime_ns, st.st_size, key)


def _add_entity(vault: Vault, page: ParsedPage) -> None:
    entity = entity_from_page(page, vault.problems)
    if entity.id in vault.entities:
        other = vault.entities[entity.id]
        vault.problems.append(error(page.path, page.line_of("name") or 1,
                                    f"duplicate name `{entity.name}`: {other.page} already defines `{other.name}`",
                                    "give each page a unique name"))
        return
    _index(vault, entity, page)
    vault.entities[entity.id] = entity
    if page.has_front_matter and not (entity.fields or entity.summary or any(s.text for s in entity.sections)):
        if not page.problems:
            vault.problems.append(warning(page.path, 1, f"page `{entity.name}` states no facts",
                                          "add fields, a first paragraph or sections"))


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
    entity = Entity(id=slug(name), name=name, type=etype, page=path, tags=_tags(page),
                    summary=page.summary, summary_line=page.summary_line,
                    summary_targets=page.summary_targets, sections=page.sections)
    entity.aliases = [str(a).strip() for a in _as_list(meta.get("aliases")) if str(a).strip()]
    secret = meta.get("secret", False)
    if not isinstance(secret, bool):
        problems.append(error(path, page.line_of("secret"), "`secret` must be true or false", "write `secret: true`"))
    entity.secret = secret is True
    article = meta.get("article_in_name", False)
    if not isinstance(article, bool):
        problems.append(error(path, page.line_of("article_in_name"), "`article_in_name` must be true or false",
                              "write `article_in_name: true` to keep a leading \"The\" capitalised mid-sentence"))
    entity.article_in_name = article is True
    for key, raw in meta.items():
        if key in RESERVED or raw is None:
            continue
        if isinstance(raw, dict) or (isinstance(raw, list) and any(isinstance(i, (dict, list)) for i in raw)):
            problems.append(warning(path, page.line_of(key), f"field `{key}` holds a nested table; it is ignored",
                                    "use text, a [[link]] or a list of these"))
            continue
        items = [page.key_lines.get(f"{key}[{i}]", 0) for i in range(len(raw))] if isinstance(raw, list) else None
        parts = parse_value(raw, page.line_of(key) or 1, items)
        if parts:
            entity.fields[key] = parts
            entity.field_lines[key] = page.line_of(key) or 1
    return entity


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
    tags = [str(t).strip().lstrip("#").lower() for t in _as_list(page.meta.get("tags"))]
    tags += [t.lower() for t in page.tags]
    return sorted({t for t in tags if t})


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
            if link.key and link.key.startswith("npc.knows") or link.key == "known_by":
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
    if link.heading:
        headings = [s.heading for s in target.sections]
        if link.heading.lower() not in (h.lower() for h in headings):
            close = difflib.get_close_matches(link.heading, headings, n=1)
            fix = f"did you mean [[{link.target}#{close[0]}]]?" if close else f"add `## {link.heading}` to {target.page}"
            vault.problems.append(warning(page.path, link.line,
                                          f"[[{link.target}#{link.heading}]]: no such heading in {target.page}", fix))
    return target


_NPC_TEXT = ("voice", "greeting", "style", "refuse", "dont_know")


def _build_npc(vault: Vault, entity: Entity) -> None:
    page = _page(vault, entity)
    raw = page.meta.get("npc")
    if raw is None or raw is False:
        return
    line = page.line_of("npc")
    if entity.type != "character":
        vault.problems.append(error(entity.page, line, f"`npc` on a {entity.type} page",
                                    "only `type: character` pages can be NPCs"))
        return
    table = {} if raw is True else raw
    if not isinstance(table, dict):
        vault.problems.append(error(entity.page, line, "`npc` must be a table (voice, greeting, knows, ...) or `true`",
                                    "write `npc:` followed by indented `voice: ...` and `knows: [...]` lines"))
        return
    npc = Npc(id=entity.id, name=entity.name, page=entity.page)
    for key in _NPC_TEXT:
        value = table.get(key)
        setattr(npc, key, "" if value is None else " ".join(str(value).split()))
    npc.openers = [str(o).strip() for o in _as_list(table.get("openers")) if str(o).strip()]
    known = {"voice", "greeting", "style", "refuse", "dont_know", "openers", "knows", "secrets"}
    for key in table:
        if key not in known:
            vault.problems.append(error(entity.page, page.line_of(f"npc.{key}"), f"unknown npc field `{key}`",
                                        f"use one of: {', '.join(sorted(known))}"))
    if not npc.voice:
        vault.problems.append(error(entity.page, page.line_of("npc.voice") or line,
                                    f"missing required field `npc.voice` for NPC `{entity.name}`",
                                    "describe how they speak: `voice: Dry and clipped.`"))
    entity.npc = npc
    vault.npcs[npc.id] = npc


def _npc_refs(vault: Vault, entity: Entity, key: str) -> list[tuple[str, int]]:
    """The items of `npc.knows` / `npc.secrets`: (text, line)."""
    page = _page(vault, entity)
    items = _as_list(page.meta["npc"].get(key)) if isinstance(page.meta.get("npc"), dict) else []
    base = page.line_of(f"npc.{key}") or page.line_of("npc") or 1
    return [(str(item).strip(), page.key_lines.get(f"npc.{key}[{i}]", base)) for i, item in enumerate(items)
            if item is not None and str(item).strip()]


def _resolve_ref(vault: Vault, entity: Entity, text: str, line: int, key: str) -> set[str] | None:
    """One `knows`/`secrets` item: "*", "#tag", "[[Page]]" or a plain page name -> entity ids."""
    if text == "*":
        return vault.public_ids()
    if text.startswith("#"):
        tag = text[1:].lower()
        ids = {e.id for e in vault.entities.values() if tag in e.tags and e.public}
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
            vault.problems.append(error(entity.page, page.line_of("npc.knows") or page.line_of("npc"),
                                        f"NPC `{npc.name}` knows nothing beyond itself",
                                        "list pages in `npc.knows`, e.g. knows: [\"[[Ash Guild]]\"], \"#tag\" or \"*\""))
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
