"""Wiki links and field values: `[[Page]]`, `[[Page|text]]`, `[[Page#Heading]]`, `![[embed]]`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

LINK_RE = re.compile(r"(!?)\[\[([^\[\]|#]*)(?:#([^\[\]|]*))?(?:\|([^\[\]]*))?\]\]")
# Obsidian also links to attachments; those are not pages and are never checked.
_ATTACHMENT_RE = re.compile(r"\.(png|jpe?g|gif|webp|svg|bmp|pdf|mp3|ogg|wav|mp4|webm|canvas)$", re.I)


def is_attachment(target: str) -> bool:
    """Whether a link target is a file other than a page (`map.png`, `notes.pdf`)."""
    return bool(_ATTACHMENT_RE.search(target.strip()))


@dataclass(frozen=True)
class Link:
    target: str  # the page name as written ("" for a link to a heading of the same page)
    heading: str | None
    text: str | None  # shown text after `|`
    line: int
    embed: bool = False
    key: str | None = None  # front matter key ("affiliation", "npc.knows") or None for the body

    @property
    def shown(self) -> str:
        return (self.text or page_name(self.target) or self.heading or "").strip()


def find_links(text: str, line: int, key: str | None = None) -> list[Link]:
    """Every page link in `text`, whose first line is `line`; attachments are skipped."""
    out = []
    for m in LINK_RE.finditer(text):
        target = m.group(2).strip()
        if _ATTACHMENT_RE.search(target):
            continue
        at = line + text.count("\n", 0, m.start())
        heading = m.group(3).strip() if m.group(3) is not None else None
        out.append(Link(target, heading, m.group(4), at, bool(m.group(1)), key))
    return out


def link_path(target: str) -> str:
    """An Obsidian path-style target, normalised: `/places/The Salt Gate.md` -> `places/The Salt Gate`."""
    path = target.strip().replace("\\", "/").lstrip("/")
    while path.startswith("./"):
        path = path[2:]
    return path[:-3] if path.lower().endswith(".md") else path


def page_name(target: str) -> str:
    """The page a target names, without its folders and `.md`: `places/The Salt Gate.md` -> `The Salt Gate`."""
    return link_path(target).rsplit("/", 1)[-1].strip()


def resolve_target(target: str, index: dict, paths: dict) -> Any:
    """Look a link target up: as written (a name or alias, case-insensitive), else as a page path
    (`places/The Salt Gate`, also a trailing part of a deeper path), else by its last part.
    `index` maps lower-case names to anything, `paths` lower-case page paths (no `.md`) to the same;
    a path that two pages end with maps to None and falls through to the name."""
    low = target.strip().lower()
    hit = index.get(low)
    if hit is not None:
        return hit
    path = link_path(low)
    if "/" in path and paths.get(path) is not None:
        return paths[path]
    return index.get(page_name(path))


def path_keys(rel: str) -> list[str]:
    """The keys `resolve_target` finds a page by path: `world/places/X.md` -> `world/places/x`, `places/x`."""
    parts = link_path(rel).lower().split("/")
    return ["/".join(parts[i:]) for i in range(len(parts) - 1)]


def render_links(text: str) -> str:
    """Replace links by the text a reader sees: `[[A|the a]]` -> `the a`, `[[A#B]]` -> `A`,
    `[[places/A.md]]` -> `A`."""

    def shown(m: re.Match) -> str:
        if m.group(1) and _ATTACHMENT_RE.search(m.group(2).strip()):
            return ""
        return (m.group(4) or page_name(m.group(2) or "") or m.group(3) or "").strip()

    return LINK_RE.sub(shown, text)


@dataclass(frozen=True)
class ValuePart:
    """One item of a field value: plain text, or a link with an optional note: `[[Oren Vell]] (brother)`."""

    text: str  # as a reader sees it, links rendered
    target: str | None  # linked page name, as written
    note: str  # text around the link ("brother"), "" if none
    line: int


def parse_value(raw: object, line: int, item_lines: list[int] | None = None) -> list[ValuePart]:
    """Split a front matter value into parts; lists give one part per item (item_lines: their lines)."""
    items = raw if isinstance(raw, list) else [raw]
    parts = []
    for i, item in enumerate(items):
        if item_lines and i < len(item_lines):
            line = item_lines[i]
        if item is None or isinstance(item, (dict, list)):
            continue
        text = str(item).strip()
        if not text:
            continue
        m = LINK_RE.search(text)
        if m and not _ATTACHMENT_RE.search(m.group(2).strip()):
            rest = (text[: m.start()] + " " + text[m.end() :]).strip()
            note = render_links(rest).strip().strip("()").strip()
            parts.append(ValuePart(render_links(text).strip(), m.group(2).strip(), note, line))
        else:
            parts.append(ValuePart(render_links(text), None, "", line))
    return parts
