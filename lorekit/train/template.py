"""The Jinja chat template saved with the tokenizer, generated from `lorekit.chat_formats`.

Tools that read `tokenizer_config.json` (transformers, llama.cpp's converter, the runtime) then
render prompts exactly the way the model was trained. A test checks both agree.
"""

from __future__ import annotations

from lorekit.chat_formats import ChatFormat


def chat_template(fmt: ChatFormat) -> str:
    """A Jinja template equivalent to `fmt.render(messages, add_generation_prompt)`."""
    open_, eot, model = fmt.turn_open, fmt.end_of_turn, fmt.model_role
    if fmt.native_system:
        setup = "{%- set messages_ = messages -%}"
    else:  # fold the system text into the first user turn
        setup = (
            "{%- if messages and messages[0]['role'] == 'system' -%}"
            "{%- set system_ = messages[0]['content'] -%}{%- set rest_ = messages[1:] -%}"
            "{%- if rest_ and rest_[0]['role'] == 'user' -%}"
            "{%- set messages_ = [{'role': 'user', 'content': system_ + '\\n\\n' + rest_[0]['content']}]"
            " + rest_[1:] -%}"
            "{%- else -%}{%- set messages_ = [{'role': 'user', 'content': system_}] + rest_ -%}{%- endif -%}"
            "{%- else -%}{%- set messages_ = messages -%}{%- endif -%}"
        )
    return (
        setup + "{{- '" + fmt.bos + "' -}}"
        "{%- for m in messages_ -%}"
        "{%- set role_ = '" + model + "' if m['role'] == 'assistant' else m['role'] -%}"
        "{{- '" + open_ + "' + role_ + '\\n' + m['content'] + '" + eot + "\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '" + open_ + model + "\\n' -}}{%- endif -%}"
    )
