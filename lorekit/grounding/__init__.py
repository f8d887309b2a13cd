"""Grounding: every NPC's lore notes, retrieved into its prompt each turn.

- `notes`: one neutral sentence per fact an NPC may tell (rendered through the templates), with its
  source page and heading; secrets appear only to their holders, and only as a topic to keep.
- `retrieve`: which notes a player's line (and the recent history) asks about, within a budget.
- `rows`: training and eval rows in the served layout (right note among distractors, "I don't know"
  when the notes lack the answer, attacks on secrets), built from the compiled rows.

Compile, serve and eval share these modules, so the notes a model is trained with are the ones it
is served with; `lorekit.prompt` lays them out.
"""

from lorekit.grounding.notes import Note, NoteBook, build_notes
from lorekit.grounding.retrieve import Budget, Retriever

__all__ = ["Budget", "Note", "NoteBook", "Retriever", "build_notes"]
