"""What a vault keeps secret, listed for `lorekit validate` so a modder can check it.

The rules themselves live in `lorekit.lore.facts` (`may_tell`, `holds_secret`); this module only
describes them, page by page: whole secret pages, `known_by` pages, secret parts of pages, and the
pages NPCs refuse through their `secrets`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lorekit.lore.facts import secret_holders
from lorekit.lore.vault import Vault

_QUOTE = 60


@dataclass(frozen=True)
class SecretPart:
    file: str
    line: int | None
    what: str  # "the whole page (`secret: true`)", "section `Secrets`", ...
    told_by: tuple[str, ...] = ()  # NPC ids that say it openly
    refused_by: tuple[str, ...] = ()  # NPC ids that know it and refuse

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        who = []
        if self.told_by:
            who.append("told only by " + ", ".join(self.told_by))
        if self.refused_by:
            who.append("refused by " + ", ".join(self.refused_by))
        return f"{where}: {self.what}: {'; '.join(who) if who else 'held by no NPC'}"


def secrets_of(vault: Vault) -> list[SecretPart]:
    out = []
    for entity in vault.entities.values():
        refusing = tuple(sorted(n.id for n in vault.npcs.values() if entity.id in n.secrets))
        telling = tuple(sorted(n.id for n in vault.npcs.values() if entity.id in n.knows and n.id != entity.id))
        if entity.secret:
            out.append(SecretPart(entity.page, None, "the whole page (`secret: true`)", telling, refusing))
        elif entity.known_by:
            out.append(SecretPart(entity.page, None, "the whole page, known only by its `known_by`", telling, refusing))
        elif refusing:
            out.append(SecretPart(entity.page, None, "the page, in these NPCs' `secrets` (others may tell it)",
                                  (), refusing))
        holders = tuple(sorted(secret_holders(vault, entity.id)))
        for section in entity.sections:
            if section.secret and section.text:
                out.append(SecretPart(entity.page, section.text_line, f"{section.why}: \"{_quote(section.text)}\"",
                                      (), holders))
        for key, parts in entity.secret_fields.items():
            out.append(SecretPart(entity.page, parts[0].line, f"inline field `{key}` in secret text", (), holders))
    return out


def _quote(text: str) -> str:
    return text if len(text) <= _QUOTE else text[:_QUOTE].rsplit(" ", 1)[0] + "..."
