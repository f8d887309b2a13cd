"""Lore: parse a markdown vault into a validated entity graph and the facts it states.

    from lorekit.lore import load_vault
    vault = load_vault(Path("sample_lore"))
    for p in vault.problems: print(p)      # file:line: message (fix)
"""

from lorekit.lore.facts import SECRET, Fact, facts_of, holds_secret, may_tell
from lorekit.lore.model import Entity, Npc
from lorekit.lore.problems import Problem
from lorekit.lore.vault import Vault, load_vault, slug

__all__ = ["SECRET", "Entity", "Fact", "Npc", "Problem", "Vault", "facts_of", "holds_secret", "load_vault", "may_tell",
           "slug"]
