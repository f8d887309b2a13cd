"""The one rule for "is this a lore file": the vault scan, the incremental compiler, the server's
watcher and the build keys all ask here.

In a lore folder:
- a page is a `.md` file outside hidden (`.obsidian`) and underscore (`_drafts`) folders, whose name
  starts with neither `.` nor `_`;
- a template is a `.j2` / `.jinja` file under `_templates/` (the vault's overrides);
- the config is `lorekit.toml` at the top.
Everything else (images, editor swap files, `.obsidian/`, `_drafts/`) is not lore.

A README (`README.md`, `readme.md`, any case, in any folder) is a page here, so that the watcher and
the build keys see an edit that turns it into one; the vault loader reads it as notes for people and
skips it unless its front matter declares a `type` (`lorekit.lore.vault.readme_notes`).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from lorekit.config import CONFIG_NAME

TEMPLATE_DIR = "_templates"
TEMPLATE_SUFFIXES = (".j2", ".jinja")
Kind = Literal["page", "template", "config"]


def hidden(name: str) -> bool:
    """A file or folder name the vault never reads pages from."""
    return name.startswith((".", "_"))


def lore_kind(rel: str) -> Kind | None:
    """What the file at `rel` (relative to the lore folder, `/`-separated) is to LoreKit; None: not lore."""
    parts = PurePosixPath(rel).parts
    if not parts or any(p.startswith(".") for p in parts):
        return None
    if parts == (CONFIG_NAME,):
        return "config"
    if parts[0] == TEMPLATE_DIR:
        return "template" if len(parts) > 1 and parts[-1].lower().endswith(TEMPLATE_SUFFIXES) else None
    if any(hidden(p) for p in parts) or not parts[-1].endswith(".md"):
        return None
    return "page"


def is_page(rel: str) -> bool:
    return lore_kind(rel) == "page"


def is_readme(rel: str) -> bool:
    """A folder's README (`README.md`, `docs/readme.md`): notes for people unless it declares a `type`."""
    path = PurePosixPath(rel)
    return path.suffix == ".md" and path.stem.lower() == "readme"


def is_template(rel: str) -> bool:
    """A template file in a template folder (the defaults, `[compile] template_dir`), `rel` relative to it."""
    parts = PurePosixPath(rel).parts
    return bool(parts) and not any(p.startswith(".") for p in parts) and parts[-1].lower().endswith(TEMPLATE_SUFFIXES)
