"""YAML front matter with line numbers, built straight from PyYAML's node tree.

Scalars stay text (numbers and dates as written) except booleans and nulls, so `population: 1,200`
and `date: 1203-04-01` reach the dataset exactly as the modder wrote them.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

try:  # the C parser is ~10x faster; fall back to pure Python where libyaml is missing
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"


def norm_key(key: object) -> str:
    """Field names are case-insensitive; spaces and hyphens count as underscores."""
    return re.sub(r"[\s\-]+", "_", str(key).strip().lower())


class FrontMatterError(Exception):
    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.line = line


def parse(text: str, first_line: int) -> tuple[dict[str, Any], dict[str, int]]:
    """Parse YAML whose first line is `first_line` of the file: (values, {key path: line})."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        # the start of the unclosed construct (`[`, a quote) is where the fix goes, when known
        mark = e.context_mark or e.problem_mark
        line = first_line + (mark.line if mark else 0)
        raise FrontMatterError(f"malformed YAML front matter: {e.problem or e}", line) from None
    except yaml.YAMLError as e:
        raise FrontMatterError(f"malformed YAML front matter: {e}", first_line) from None
    if node is None:
        return {}, {}
    if not isinstance(node, yaml.MappingNode):
        raise FrontMatterError("front matter must be `key: value` lines", first_line + node.start_mark.line)
    lines: dict[str, int] = {}
    return _mapping(node, lines, "", first_line), lines


def _mapping(node: yaml.MappingNode, lines: dict[str, int], prefix: str, first: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = norm_key(key_node.value if isinstance(key_node, yaml.ScalarNode) else "?")
        path = prefix + key
        lines.setdefault(path, first + key_node.start_mark.line)
        out[key] = _value(value_node, lines, path, first)
    return out


def _value(node: yaml.Node, lines: dict[str, int], path: str, first: int) -> Any:
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _BOOL:
            return node.value.lower() in ("true", "yes", "on", "y")
        if node.tag == _NULL:
            return None
        return node.value
    if isinstance(node, yaml.SequenceNode):
        if _is_unquoted_link(node):  # `affiliation: [[Ash Guild]]` parses as a nested list
            return f"[[{node.value[0].value[0].value}]]"
        items = []
        for i, item in enumerate(node.value):
            lines[f"{path}[{i}]"] = first + item.start_mark.line
            items.append(_value(item, lines, f"{path}[{i}]", first))
        return items
    if isinstance(node, yaml.MappingNode):
        return _mapping(node, lines, path + ".", first)
    return None  # pragma: no cover


def _is_unquoted_link(node: yaml.SequenceNode) -> bool:
    return (
        len(node.value) == 1
        and isinstance(node.value[0], yaml.SequenceNode)
        and len(node.value[0].value) == 1
        and isinstance(node.value[0].value[0], yaml.ScalarNode)
    )
