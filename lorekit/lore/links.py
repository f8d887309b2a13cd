"""Wiki links and field values: `[[Page]]`, `[[Page|text]]`, `[[Page#Heading]]`, `![[embed]]`."""

from __future__ import annotations

import re
from dataclasses import dataclass

LINK_RE = re.compile(r"(!?)\[\[([^\[\]|#]*)(?:#([^\[\]|]*))?(?:\|([^\[\]]*))?\]\]")
# Obsidian also links to attachments; those are not pages and are never checked.
_ATTACHMENT_RE = re.compile(r"\.(png|jpe?g|gif|webp|svg|bmp|pdf|mp3|ogg|wav|mp4|webm|canvas)$", re.I)


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
        return (self.text or self.target or self.heading or "").strip()


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


def render_links(text: str) -> str:
    """Replace links by the text a reader sees: `[[A|the a]]` -> `the a`, `[[A#B]]` -> `A`."""

    def shown(m: re.Match) -> str:
        if m.group(1) and _ATTACHMENT_RE.search(m.group(2).strip()):
            return ""
        return (m.group(4) or m.group(2) or m.group(3) or "").strip()

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
