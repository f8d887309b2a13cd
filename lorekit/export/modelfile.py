"""The Ollama `Modelfile` next to `model.gguf`: chat template, stop tokens, optional NPC persona.

The templates render the same text as `lorekit.chat_formats` (Ollama adds `<bos>` itself from the
GGUF's `add_bos_token`). Gemma 3 has no system role: a system message is put at the top of the next
user turn, as in training. The end-of-turn marker must be a stop token or the model talks on.
"""

from __future__ import annotations

from lorekit import chat_formats
from lorekit.errors import LorekitError

_GEMMA3 = """\
{{- $system := "" }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq $m.Role "system" }}{{ $system = $m.Content }}
{{- else if eq $m.Role "user" }}<start_of_turn>user
{{ if $system }}{{ $system }}

{{ end }}{{ $system = "" }}{{ $m.Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq $m.Role "assistant" }}<start_of_turn>model
{{ $m.Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

_GEMMA4 = """\
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq $m.Role "assistant" }}<|turn>model
{{ $m.Content }}{{ if not $last }}<turn|>
{{ end }}
{{- else }}<|turn>{{ $m.Role }}
{{ $m.Content }}<turn|>
{{ if $last }}<|turn>model
{{ end }}
{{- end }}
{{- end }}"""

TEMPLATES = {"gemma3": _GEMMA3, "gemma4": _GEMMA4}


def render(family: str, model_file: str = "./model.gguf", system: str | None = None,
           temperature: float = 0.7, num_ctx: int = 4096) -> str:
    """The Modelfile text for `family`; `system` (an NPC persona) becomes a SYSTEM block."""
    fmt = chat_formats.get(family)
    if family not in TEMPLATES:
        raise LorekitError(f"no Ollama template for family {family!r} (known: {', '.join(TEMPLATES)})")
    lines = [
        "# Written by `lorekit export`. Build it with: ollama create my-npc -f Modelfile",
        f"FROM {model_file}",
        f'TEMPLATE """{TEMPLATES[family]}"""',
    ]
    for stop in fmt.stop:
        lines.append(f'PARAMETER stop "{stop}"')
    lines += [f"PARAMETER temperature {temperature}", f"PARAMETER num_ctx {num_ctx}"]
    if system:
        if '"""' in system:
            raise LorekitError('the NPC persona contains """, which a Modelfile cannot quote; remove it from the persona')
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def persona(out_dir, npc_id: str) -> str:
    """The NPC's system prompt, from the lore folder the dataset was compiled from."""
    import json
    from pathlib import Path

    from lorekit.lore import load_vault
    from lorekit.prompt import persona as render_persona
    from lorekit.prompt import template_dir_of

    report = Path(out_dir) / "dataset" / "report.json"
    if not report.is_file():
        raise LorekitError(f"{report}: missing, so the lore of NPC `{npc_id}` cannot be found; run `lorekit compile` "
                           "first or export without --npc")
    lore_dir = json.loads(report.read_text(encoding="utf-8")).get("lore_dir")
    if not lore_dir:
        raise LorekitError(f"{report}: has no lore_dir; re-run `lorekit compile`")
    return render_persona(load_vault(Path(lore_dir)), npc_id, template_dir_of(lore_dir))
