"""Hostile input for the card reader and importer: whatever the bytes, only a LorekitError (one line)."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorekit.cards.card import parse_card
from lorekit.cards.importer import plan
from lorekit.errors import LorekitError
from lorekit.lore.page import parse_page

SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
card_keys = st.sampled_from(["name", "description", "personality", "first_mes", "scenario", "mes_example", "tags",
                             "alternate_greetings", "character_book", "extensions", "nickname"])
entry = st.fixed_dictionaries({}, optional={"keys": st.lists(st.text(max_size=12), max_size=3) | json_values,
                                            "content": st.text(max_size=40) | json_values,
                                            "name": st.text(max_size=12), "enabled": json_values,
                                            "use_regex": st.booleans()})
hostile_data = st.dictionaries(card_keys, json_values, max_size=6) | st.fixed_dictionaries(
    {"name": st.text(max_size=30), "character_book": st.fixed_dictionaries({"entries": st.lists(entry, max_size=4)})},
    optional={"personality": st.text(max_size=30), "description": st.text(max_size=60),
              "first_mes": st.text(max_size=30)})
cards = st.fixed_dictionaries({"spec": st.sampled_from(["chara_card_v2", "chara_card_v3"]) | json_values,
                               "data": hostile_data | json_values})


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _only_lorekit_errors(data: bytes, source: str):
    try:
        return parse_card(data, source)
    except LorekitError as e:
        assert "\n" not in str(e) and str(e).startswith(source)
        return None


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["x.json", "x.png", "card"]))
def test_any_bytes(data, source):
    _only_lorekit_errors(data, source)
    _only_lorekit_errors(b"\x89PNG\r\n\x1a\n" + data, source)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([b"IHDR", b"tEXt", b"IDAT", b"zTXt", b"IEND"]), st.binary(max_size=60)),
                max_size=5), st.integers(0, 40))
def test_png_chunks_cut_anywhere(parts, cut):
    data = b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(k, b) for k, b in parts)
    _only_lorekit_errors(data[:len(data) - cut] if cut else data, "c.png")


@SETTINGS
@given(cards, st.sampled_from(["chara", "ccv3"]), st.booleans())
def test_hostile_json_as_json_and_in_a_png(card, keyword, as_png):
    text = json.dumps(card).encode("utf-8")
    if as_png:
        text = b"\x89PNG\r\n\x1a\n" + _chunk(b"tEXt", keyword.encode() + b"\0" + base64.b64encode(text)) + _chunk(b"IEND", b"")
    _only_lorekit_errors(text, "c.png" if as_png else "c.json")


@SETTINGS
@given(cards)
def test_a_card_that_reads_imports_into_pages_that_parse(tmp_path_factory, card):
    parsed = _only_lorekit_errors(json.dumps(card).encode("utf-8"), "c.json")
    if parsed is None:
        return
    lore = tmp_path_factory.mktemp("lore")
    try:
        result = plan(parsed, Path(lore), "c.json")
    except LorekitError as e:
        assert "\n" not in str(e)
        return
    for w in result.writes:
        page = parse_page(w.rel, w.text.encode("utf-8"))
        assert page.problems == [], (w.rel, w.text)
        assert page.meta.get("type") in ("character", "lore")


def test_deeply_nested_json_and_huge_numbers():
    for data in (b"[" * 100_000, b'{"spec": "chara_card_v2", "data": ' + b"[" * 50_000, b"1" * 100_000,
                 b'{"spec": "chara_card_v2", "data": {"name": "A", "tags": [' + b"9" * 5000 + b"]}}"):
        assert _only_lorekit_errors(data, "deep.json") is None
