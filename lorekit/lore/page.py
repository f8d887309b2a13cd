"""Parse one markdown page into plain data: front matter, title, summary, sections, links, tags.

`parse_page` never raises on bad lore: it records problems on the page. Its result depends only on
the file's bytes and path, so the compiler caches it by content hash.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from lorekit.lore import frontmatter
from lorekit.lore.links import Link, find_links, render_links
from lorekit.lore.problems import Problem, error

_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_TAG_RE = re.compile(r"(?<![\w#&/\[])#([A-Za-z][\w/-]*)")
_CALLOUT_RE = re.compile(r"^>\s*\[!(\w+)\][-+]?\s*(.*)$")
_FENCE_RE = re.compile(r"^(```|~~~)")
_EMPHASIS_RE = re.compile(r"(\*\*|__|`)")


@dataclass
class Section:
    heading: str
    level: int
    line: int
    text: str = ""  # first paragraph, links rendered as shown text
    text_line: int = 0
    targets: list[str] = field(default_factory=list)  # pages linked from that paragraph


@dataclass
class ParsedPage:
    path: str  # relative to the vault, with forward slashes
    sha: str
    meta: dict[str, Any] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)
    has_front_matter: bool = False
    title: str | None = None
    summary: str = ""
    summary_line: int = 0
    summary_targets: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)  # every heading below the title
    links: list[Link] = field(default_factory=list)  # front matter and body, secret callouts included
    secret_links: list[Link] = field(default_factory=list)  # links that sit inside `> [!secret]`
    tags: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key)


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def parse_page(path: str, data: bytes) -> ParsedPage:
    page = ParsedPage(path=path, sha=content_hash(data))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        page.problems.append(error(path, line, f"not UTF-8 text (byte 0x{data[e.start]:02x})",
                                   "save the file as UTF-8"))
        return page
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        page.problems.append(error(path, 1, "empty page", "write front matter with a `type`, or delete the file"))
        return page
    lines = text.split("\n")
    body_start = _front_matter(page, lines)
    _body(page, lines, body_start)
    return page


def _front_matter(page: ParsedPage, lines: list[str]) -> int:
    """Parse the `---` block if there is one; return the index of the first body line."""
    if not lines or lines[0].strip() != "---":
        return 0
    for end in range(1, len(lines)):
        if lines[end].strip() in ("---", "..."):
            break
    else:
        page.problems.append(error(page.path, 1, "front matter is not closed",
                                   "end it with a line containing only `---`"))
        return len(lines)
    page.has_front_matter = True
    try:
        page.meta, page.key_lines = frontmatter.parse("\n".join(lines[1:end]), 2)
    except frontmatter.FrontMatterError as e:
        page.problems.append(error(page.path, e.line, str(e), "fix the YAML syntax (quote values containing `:` or `[[`)"))
    for key, value in page.meta.items():
        _collect_value_links(page, key, value)
    return end + 1


def _collect_value_links(page: ParsedPage, path: str, value: Any) -> None:
    if isinstance(value, str):
        page.links.extend(find_links(value, page.key_lines.get(path, 1), path.split("[")[0]))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _collect_value_links(page, f"{path}[{i}]", item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect_value_links(page, f"{path}.{key}", item)


def _body(page: ParsedPage, lines: list[str], start: int) -> None:
    """Walk the body once: headings, paragraphs, callouts, links and tags."""
    section: Section | None = None
    para: list[str] = []
    para_line = 0
    in_fence = False
    secret_callout = False

    def flush() -> None:
        nonlocal para
        raw_text = " ".join(para)
        text = _clean(raw_text)
        if text:
            targets = [link.target for link in find_links(raw_text, 0) if link.target]
            if section is None and not page.summary:
                page.summary, page.summary_line, page.summary_targets = text, para_line, targets
            elif section is not None and not section.text:
                section.text, section.text_line, section.targets = text, para_line, targets
        para = []

    for i in range(start, len(lines)):
        raw, n = lines[i], i + 1
        stripped = raw.strip()
        if _FENCE_RE.match(stripped):
            in_fence = not in_fence
            flush()
            continue
        if in_fence:
            continue
        callout = _CALLOUT_RE.match(stripped)
        if callout:
            flush()
            secret_callout = callout.group(1).lower() == "secret"
            stripped = "> " + callout.group(2)
        elif not stripped.startswith(">"):
            secret_callout = False
        links = find_links(raw, n)
        if secret_callout:
            page.links.extend(links)
            page.secret_links.extend(links)
            continue
        page.links.extend(links)
        heading = _HEADING_RE.match(stripped)
        if heading:
            flush()
            level, title = len(heading.group(1)), render_links(heading.group(2)).strip()
            if level == 1 and page.title is None and section is None:
                page.title = title
            else:
                section = Section(title, level, n)
                page.sections.append(section)
            continue
        page.tags.extend(t for t in _TAG_RE.findall(render_links(raw)) if t not in page.tags)
        if not stripped:
            flush()
            continue
        if not para:
            para_line = n
        para.append(stripped.lstrip("> ").strip() if stripped.startswith(">") else stripped)
    flush()


def _clean(text: str) -> str:
    text = render_links(text)
    text = _TAG_RE.sub("", text)
    text = _EMPHASIS_RE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()
