"""Parse one markdown page into plain data: front matter, title, summary, sections, links, tags.

`parse_page` never raises on bad lore: it records problems on the page. Its result depends only on
the file's bytes and path, so the compiler caches it by content hash.

Obsidian habits read here: `%%comments%%` and `<!-- comments -->` are dropped, block references
(`^abc123`) are stripped, Dataview inline fields (`key:: value` on a line, `[key:: value]` or
`(key:: value)` in a sentence) are fields, and a line of embeds only (`![[Page]]`) links but is no
prose. Secret text (`Section.secret`, `secret_fields`) is kept apart from what is taught: a heading named
"Secret(s)" or tagged `#secret` (with everything under it), a paragraph tagged `#secret`, a
`> [!secret]` callout. Code is not prose: fenced blocks are skipped, and a `#tag` inside `inline code`
is no tag and a `[[link]]` there no link, as Obsidian shows them (the code keeps its text).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from lorekit.lore import frontmatter
from lorekit.lore.links import LINK_RE, Link, find_links, is_attachment, render_links
from lorekit.lore.problems import Problem, error

_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_TAG_RE = re.compile(r"(?<![\w#&/\[])#([A-Za-z][\w/-]*)")
_CALLOUT_RE = re.compile(r"^>\s*\[!(\w+)\][-+]?\s*(.*)$")
_FENCE_RE = re.compile(r"^(`{3,}|~{3,})(.*)$")
_QUOTE_RE = re.compile(r"^(?:>\s?)+")
_CODE_SPAN_RE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")  # CommonMark: closed by a run of the same length
_EMPHASIS_RE = re.compile(r"(\*\*|__|`)")
_COMMENT_OPEN_RE = re.compile(r"%%|<!--")
_BLOCK_ID_RE = re.compile(r"(?:^|\s)\^[A-Za-z0-9-]+\s*$")
# Dataview: `key:: value` as a whole line (also as a list item), `[key:: value]` / `(key:: value)` inline
_FIELD_LINE_RE = re.compile(r"^(?:[-*+]\s+)?(?:\*\*|__)?([A-Za-z][\w \-]*?)(?:\*\*|__)?::\s*(.*?)\s*$")
_VALUE = r"(?:\[\[[^\]]*\]\]|[^\[\]()])*?"
_FIELD_INLINE_RE = re.compile(rf"\[\s*([A-Za-z][\w \-]*?)\s*::\s*({_VALUE})\s*\]|\(\s*([A-Za-z][\w \-]*?)\s*::\s*({_VALUE})\s*\)")
_EMBED_LINE_RE = re.compile(r"^(?:!\[\[[^\[\]]*\]\]\s*)+$")
_SECRET_TAG = "secret"
_SECRET_TAG_RE = re.compile(r"\s*(?<![\w#&/\[])#secret\b", re.I)
_SECRET_HEADINGS = ("secret", "secrets")


@dataclass
class Section:
    heading: str
    level: int
    line: int
    text: str = ""  # first paragraph, links rendered as shown text
    text_line: int = 0
    targets: list[str] = field(default_factory=list)  # pages linked from that paragraph
    secret: bool = False  # never taught openly (see lorekit.lore.facts.may_tell)
    why: str = ""  # what made it secret, as validate shows it: "heading `Secrets`", "#secret tag", ...
    more: list[str] = field(default_factory=list)  # its later paragraphs, cleaned (for character cards)


@dataclass
class ParsedPage:
    path: str  # relative to the vault, with forward slashes
    sha: str
    meta: dict[str, Any] = field(default_factory=dict)  # front matter, plus public inline fields
    key_lines: dict[str, int] = field(default_factory=dict)
    has_front_matter: bool = False
    title: str | None = None
    summary: str = ""
    summary_line: int = 0
    summary_targets: list[str] = field(default_factory=list)
    summary_more: list[str] = field(default_factory=list)  # later paragraphs before the first heading
    sections: list[Section] = field(default_factory=list)  # every heading below the title, and secret paragraphs
    links: list[Link] = field(default_factory=list)  # front matter and body, secret text included
    secret_links: list[Link] = field(default_factory=list)  # links that sit inside `> [!secret]`
    tags: list[str] = field(default_factory=list)
    secret_fields: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # inline fields in secret text
    images: list[str] = field(default_factory=list)  # embedded attachments (`![[portrait.png]]`), as written
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
    _Body(page).walk(_strip_comments(lines[body_start:]), body_start)
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


def _strip_comments(lines: list[str]) -> list[tuple[str | None, bool]]:
    """Body lines without `%%...%%` and `<!--...-->` (either may span lines; code blocks keep them),
    each with whether it is code (a fence or inside a fenced block). A line that held nothing but
    comment becomes None: it neither adds text nor ends a paragraph."""
    out: list[tuple[str | None, bool]] = []
    closing: str | None = None  # the comment we are inside: "%%" or "-->"
    fences = _Fences()
    for line in lines:
        if closing is None and fences.code(line.strip()):
            out.append((line, True))
            continue
        if closing is None and "%%" not in line and "<!--" not in line:
            out.append((line, False))
            continue
        kept, i = [], 0
        while i <= len(line):
            if closing is not None:
                j = line.find(closing, i)
                if j < 0:
                    break
                i, closing = j + len(closing), None
                continue
            m = _COMMENT_OPEN_RE.search(line, i)
            if m is None:
                kept.append(line[i:])
                break
            kept.append(line[i:m.start()])
            closing, i = ("%%" if m.group() == "%%" else "-->"), m.end()
        rest = "".join(kept)
        out.append((rest if rest.strip() or not line.strip() else None, False))
    return out


class _Fences:
    """Fenced code blocks, line by line, as CommonMark reads them: a fence of three or more backticks
    or tildes is closed by a fence of the same character, at least as long; a fence opened inside a
    `>` quote or callout ends with it; a backtick line such as ```` ```js``` ```` is inline code, no fence."""

    def __init__(self) -> None:
        self.fence = ""  # the opening fence while inside a block
        self.quoted = False  # whether that fence sits in a `>` quote

    def code(self, stripped: str) -> bool:
        """Whether this line (without its indentation) is a fence or inside a fenced block."""
        quoted = stripped.startswith(">")
        if self.fence and self.quoted and not quoted:
            self.fence = ""  # the quote ended, and its code block with it
        text = _QUOTE_RE.sub("", stripped).strip() if quoted and (self.quoted or not self.fence) else stripped
        if self.fence:
            if len(text) >= len(self.fence) and text == self.fence[0] * len(text):
                self.fence = ""
            return True
        m = _FENCE_RE.match(text)
        if m is None or (m.group(1)[0] == "`" and "`" in m.group(2)):
            return False
        self.fence, self.quoted = m.group(1), quoted
        return True


class _Body:
    """Walk the body once: headings, paragraphs, callouts, inline fields, links and tags."""

    def __init__(self, page: ParsedPage):
        self.page = page
        self.section: Section | None = None  # the heading the text belongs to
        self.secret_level: int | None = None  # level of the secret heading we are under
        self.secret_line = 0  # and its line
        self.para: list[str] = []
        self.para_line = 0
        self.fields: list[tuple[str, str, int, bool]] = []  # inline fields of the paragraph: (key, value, line, tagged)
        self.callout: str | None = None  # inside `> [!secret]`: its title
        self.callout_line = 0
        self.callout_text = False  # whether the callout gave any paragraph yet

    def walk(self, lines: list[tuple[str | None, bool]], offset: int) -> None:
        for i, (raw, code) in enumerate(lines):
            if code:  # ends a paragraph; inside a callout, the callout goes on
                self.flush()
            elif raw is not None:  # None: a line of comments only
                self.line(raw, raw.strip(), offset + i + 1)
        self.end_callout()
        self.flush()

    def line(self, raw: str, stripped: str, n: int) -> None:
        page = self.page
        callout = _CALLOUT_RE.match(stripped)
        if callout:
            self.end_callout()
            self.flush()
            if callout.group(1).lower() == "secret":
                self.callout, self.callout_line, self.callout_text = _clean(callout.group(2)), n, False
                links = find_links(_mask_code(raw), n)  # none from `inline code`
                page.links.extend(links)
                page.secret_links.extend(links)
                return
            stripped = "> " + callout.group(2)
        elif self.callout is not None and not stripped.startswith(">"):
            self.end_callout()
        links = find_links(_mask_code(raw), n)  # none from `inline code`
        page.links.extend(links)
        if "![[" in raw:
            page.images.extend(m.group(2).strip() for m in LINK_RE.finditer(raw) if m.group(1) and is_attachment(m.group(2)))
        if self.callout is not None:
            page.secret_links.extend(links)
            stripped = stripped[1:].strip()
            if not stripped:
                self.flush()
                return
        heading = _HEADING_RE.match(stripped) if self.callout is None else None
        if heading:
            self.flush()
            self.heading(len(heading.group(1)), heading.group(2), n)
            return
        if not stripped:
            self.flush()
            return
        if stripped.startswith(">"):
            stripped = stripped.lstrip("> ").strip()
        if ("::" in stripped and self.field_line(stripped, n)) or (stripped[:1] in ("^", "!") and (
                _BLOCK_ID_RE.fullmatch(stripped) or _EMBED_LINE_RE.match(stripped))):
            return
        if not self.para:
            self.para_line = n
        self.para.append(self.inline_fields(_BLOCK_ID_RE.sub("", stripped) if "^" in stripped else stripped, n))

    def heading(self, level: int, raw_title: str, n: int) -> None:
        page = self.page
        title = render_links(raw_title).strip()
        tags = _find_tags(title)
        if tags:
            title = re.sub(r"\s+", " ", _drop(_TAG_RE, title)).strip()
        if self.secret_level is not None and level <= self.secret_level:
            self.secret_level = None
        why = _secret_heading(title, tags)
        if why:
            self.secret_level, self.secret_line = level, n
        elif self.secret_level is not None:
            why = f"under the secret heading on line {self.secret_line}"
        if level == 1 and page.title is None and self.section is None and not why:
            page.title = title
            return
        self.section = Section(title, level, n, secret=bool(why), why=why)
        page.sections.append(self.section)

    def field_line(self, text: str, n: int) -> bool:
        m = _FIELD_LINE_RE.match(text)
        if m is None or not m.group(2):
            return False
        self.fields.append((m.group(1), _untag(m.group(2)), n, _has_secret_tag(m.group(2))))
        return True

    def inline_fields(self, text: str, n: int) -> str:
        """Record `[key:: value]` and `(key:: value)`; a reader sees the value."""
        def keep(m: re.Match) -> str:
            key, value = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
            if value.strip():
                self.fields.append((key, value.strip(), n, False))
            return value.strip()

        return _FIELD_INLINE_RE.sub(keep, text) if "::" in text else text

    def end_callout(self) -> None:
        if self.callout is None:
            return
        self.flush()
        if not self.callout_text and self.callout:  # `> [!secret] The whole secret on one line`
            self._add_secret(self.callout, self.callout_line, [], "Secret", "`> [!secret]` callout")
        self.callout = None

    def flush(self) -> None:
        para, fields = self.para, self.fields
        self.para, self.fields = [], []
        raw_text = " ".join(para)
        page, section = self.page, self.section
        in_secret = self.callout is not None or bool(section and section.secret)
        tagged = _has_secret_tag(raw_text)
        for key, value, line, own_tag in fields:
            self._field(key, value, line, in_secret or tagged or own_tag)
        if not in_secret and not tagged:
            page.tags.extend(t for t in _find_tags(render_links(raw_text)) if t not in page.tags)
        text = _clean(raw_text)
        if not text:
            return
        targets = [link.target for link in find_links(_mask_code(raw_text), 0) if link.target]
        if self.callout is not None:
            self.callout_text = True
            self._add_secret(text, self.para_line, targets, self.callout or "Secret", "`> [!secret]` callout")
        elif tagged and not in_secret:
            self._add_secret(text, self.para_line, targets, "Secret", "#secret tag on the paragraph")
        elif section is None:
            if not page.summary:
                page.summary, page.summary_line, page.summary_targets = text, self.para_line, targets
            else:
                page.summary_more.append(text)
        elif not section.text:
            section.text, section.text_line, section.targets = text, self.para_line, targets
        else:
            section.more.append(text)

    def _add_secret(self, text: str, line: int, targets: list[str], heading: str, why: str) -> None:
        level = self.section.level if self.section else 2
        self.page.sections.append(Section(heading, level, line, text, line, targets, secret=True, why=why))

    def _field(self, raw_key: str, value: str, line: int, secret: bool) -> None:
        """A public inline field joins the front matter (a key in both keeps both values, front matter
        first); a secret one is kept apart, in `secret_fields`."""
        page = self.page
        key = frontmatter.norm_key(raw_key)
        if secret:
            page.secret_fields.setdefault(key, []).append((value, line))
            return
        if key not in page.meta or page.meta[key] is None:
            page.meta[key] = value
            page.key_lines.setdefault(key, line)
            return
        old = page.meta[key]
        if isinstance(old, dict):
            return  # a nested table stays as written (and is reported as one)
        items = old if isinstance(old, list) else [old]
        if not isinstance(old, list):
            page.key_lines[f"{key}[0]"] = page.key_lines.get(key, line)
        page.key_lines[f"{key}[{len(items)}]"] = line
        page.meta[key] = [*items, value]


def _secret_heading(title: str, tags: list[str]) -> str:
    """Why a heading makes its section secret ("" if it does not)."""
    if any(t.lower() == _SECRET_TAG for t in tags):
        return "#secret tag on the heading"
    if _EMPHASIS_RE.sub("", title).strip().rstrip(":").strip().lower() in _SECRET_HEADINGS:
        return f"heading `{title}`"
    return ""


def _untag(value: str) -> str:
    return _drop(_SECRET_TAG_RE, value).strip()


def _has_secret_tag(text: str) -> bool:
    return "#" in text and any(t.lower() == _SECRET_TAG for t in _find_tags(render_links(text)))


def _find_tags(text: str) -> list[str]:
    """The `#tags` in `text`, none from inside `inline code`."""
    return _TAG_RE.findall(_mask_code(text))


def _drop(pattern: re.Pattern, text: str) -> str:
    """`text` without the matches of `pattern` that lie outside `inline code`."""
    kept, at = [], 0
    for m in pattern.finditer(_mask_code(text)):
        kept.append(text[at:m.start()])
        at = m.end()
    return "".join(kept) + text[at:]


def _mask_code(text: str) -> str:
    """`text` with each inline code span turned into backticks, same length: nothing in it matches a tag."""
    return _CODE_SPAN_RE.sub(lambda m: "`" * len(m.group()), text) if "`" in text else text


def _clean(text: str) -> str:
    text = render_links(text)
    text = _drop(_TAG_RE, text)
    text = _EMPHASIS_RE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()
