"""SillyTavern character cards, both ways: `lorekit import-card` and `lorekit cards`.

The test cards are written here by hand, following the Character Card V2/V3 spec: JSON, and PNGs
built with this module's own chunk writer (not lorekit's), so reader and writer check each other.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
import zlib
from pathlib import Path

import pytest

from lorekit.cards import read_card
from lorekit.cards.exporter import export_cards
from lorekit.cards.importer import import_card
from lorekit.cli import main
from lorekit.errors import LorekitError
from lorekit.lore import load_vault

FIXTURES = Path(__file__).parent / "fixtures"
MIRELA = FIXTURES / "cards" / "mirela.json"
OBSIDIAN = FIXTURES / "obsidian"


def _card() -> dict:
    return json.loads(MIRELA.read_text(encoding="utf-8"))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(texts: dict[str, dict] | None = None) -> bytes:
    """A 2x2 RGB PNG with one tEXt chunk per keyword holding base64 JSON."""
    raw = b"".join(b"\0" + b"\xff\x80\x00" * 2 for _ in range(2))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
    for key, card in (texts or {}).items():
        out += _chunk(b"tEXt", key.encode() + b"\0" + base64.b64encode(json.dumps(card).encode("utf-8")))
    return out + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _read_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Independent chunk reader that checks every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        at += 12 + length
    assert out[-1][0] == b"IEND"
    return out


def _norm(text: str) -> str:
    return " ".join(text.split())


def _vault_dir(tmp_path: Path) -> Path:
    lore = tmp_path / "lore"
    lore.mkdir()
    return lore


# --- import ---------------------------------------------------------------------------------------------

def test_import_v2_json_writes_an_npc_and_its_book(tmp_path, capsys):
    lore = _vault_dir(tmp_path)
    assert main(["import-card", str(MIRELA), str(lore)]) == 0
    out = capsys.readouterr().out
    assert "wrote characters/Mirela Stoica.md (NPC `mirela-stoica`, knows 3 page(s))" in out
    assert "wrote lore/Velesk.md (book entry \"Velesk\")" in out
    vault = load_vault(lore)
    assert vault.errors == []
    npc = vault.npcs["mirela-stoica"]
    card = _card()["data"]
    assert npc.voice == card["personality"]
    assert npc.greeting == card["first_mes"]
    entity = vault.entities["mirela-stoica"]
    assert entity.summary.startswith("Mirela Stoica is a lamplighter")  # description -> body, {{char}} filled in
    assert npc.knows == {"mirela-stoica", "velesk", "lamp-guild", "the-sarna-river"}
    assert vault.entities["lamp-guild"].aliases == ["the guild"]
    assert vault.entities["the-sarna-river"].aliases == ["Sarna"]
    page = (lore / "characters" / "Mirela Stoica.md").read_text(encoding="utf-8")
    assert "%% Kept from the card mirela.json" in page and "alternate greeting 1:" in page
    assert "Long night" not in " ".join([entity.summary, *(s.text for s in entity.sections)])  # kept, not taught


def test_import_png_reads_the_chara_chunk_like_the_json(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    card_png = tmp_path / "mirela.png"
    card_png.write_bytes(_png({"chara": _card()}))
    import_card(MIRELA, tmp_path / "a")
    import_card(card_png, tmp_path / "b")
    for rel in ("characters/Mirela Stoica.md", "lore/Velesk.md", "lore/Lamp Guild.md", "lore/The Sarna river.md"):
        a = (tmp_path / "a" / rel).read_text(encoding="utf-8")
        b = (tmp_path / "b" / rel).read_text(encoding="utf-8").replace("mirela.png", "mirela.json")
        assert a == b, rel


def test_import_v3_prefers_the_ccv3_chunk_and_maps_its_fields(tmp_path):
    v3 = copy.deepcopy(_card())
    v3["spec"], v3["spec_version"] = "chara_card_v3", "3.0"
    v3["data"].update(name="Mirela Stoica", nickname="Lamp Mira", group_only_greetings=[], assets=[],
                      creator_notes_multilingual={}, source=[], creation_date=0, modification_date=0)
    for entry in v3["data"]["character_book"]["entries"]:
        entry["use_regex"] = False
    v2_other = copy.deepcopy(_card())
    v2_other["data"]["name"] = "Somebody Else"
    card_png = tmp_path / "v3.png"
    card_png.write_bytes(_png({"chara": v2_other, "ccv3": v3}))
    lore = _vault_dir(tmp_path)
    import_card(card_png, lore)
    vault = load_vault(lore)
    assert vault.errors == []
    assert list(vault.npcs) == ["mirela-stoica"]
    assert vault.entities["mirela-stoica"].aliases == ["Lamp Mira"]
    assert vault.resolve("the river town").id == "velesk"
    (tmp_path / "v3.json").write_text(json.dumps(v3))
    assert read_card(tmp_path / "v3.json").nickname == "Lamp Mira"


def test_round_trip_card_vault_card_keeps_name_greeting_voice_and_every_entry(tmp_path):
    original = _card()["data"]
    lore = _vault_dir(tmp_path)
    import_card(MIRELA, lore)
    result = export_cards(lore, tmp_path / "cards")
    assert [c.npc_id for c in result.cards] == ["mirela-stoica"]
    for path in (tmp_path / "cards" / "mirela-stoica.json", tmp_path / "cards" / "mirela-stoica.png"):
        back = read_card(path)
        assert back.name == original["name"]
        assert back.first_mes == original["first_mes"]
        assert back.personality == original["personality"]
        assert len(back.book) == len(original["character_book"]["entries"])
        for entry in original["character_book"]["entries"]:
            match = [e for e in back.book if set(entry["keys"]) <= set(e.keys)]
            assert len(match) == 1, entry["keys"]
            assert _norm(entry["content"]) in _norm(match[0].content)
    # and once more: the exported card imports into a fresh vault as the same NPC
    again = tmp_path / "again"
    again.mkdir()
    import_card(tmp_path / "cards" / "mirela-stoica.png", again)
    npc = load_vault(again).npcs["mirela-stoica"]
    assert (npc.voice, npc.greeting) == (original["personality"], original["first_mes"])


def test_an_entry_whose_key_names_an_existing_page_becomes_a_section_of_it(tmp_path):
    lore = _vault_dir(tmp_path)
    (lore / "Velesk.md").write_text("---\ntype: location\n---\n# Velesk\n\nVelesk is a port.\n", encoding="utf-8")
    result = import_card(MIRELA, lore)
    assert "added ## Lore (book entry \"Velesk\") to Velesk.md" in [w.what for w in result.writes]
    assert not (lore / "lore" / "Velesk.md").exists()
    vault = load_vault(lore)
    assert vault.errors == []
    section = next(s for s in vault.entities["velesk"].sections if s.heading == "Lore")
    assert section.text.startswith("Velesk is a river town of stone bridges")
    assert "velesk" in vault.npcs["mirela-stoica"].knows
    # importing again (with --force for the NPC page) does not add the section twice
    again = import_card(MIRELA, lore, force=True)
    assert any("already in Velesk.md" in n for n in again.notes)
    assert (lore / "Velesk.md").read_text(encoding="utf-8").count("## Lore") == 1


def test_existing_pages_are_overwritten_only_with_force(tmp_path, capsys):
    lore = _vault_dir(tmp_path)
    (lore / "Mirela.md").write_text("---\ntype: character\nname: Mirela Stoica\n---\n# Mirela\n\nOld page.\n")
    assert main(["import-card", str(MIRELA), str(lore)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {MIRELA}: the card's name `Mirela Stoica` is already a page (Mirela.md) "
                   "(fix: pass --force to overwrite that page, or rename the character in the card)")
    assert "Old page." in (lore / "Mirela.md").read_text()
    assert not (lore / "lore").exists()  # nothing was written
    assert main(["import-card", str(MIRELA), str(lore), "--force"]) == 0
    assert "lamplighter" in (lore / "Mirela.md").read_text()
    assert load_vault(lore).errors == []


def test_an_entry_whose_name_is_an_existing_page_is_added_to_it(tmp_path):
    card = _card()
    card["data"]["character_book"]["entries"][2]["keys"] = ["brown river"]
    card["data"]["character_book"]["entries"][2]["name"] = "Sarna"
    (tmp_path / "c.json").write_text(json.dumps(card), encoding="utf-8")
    lore = _vault_dir(tmp_path)
    (lore / "Sarna.md").write_text("---\ntype: location\n---\n# Sarna\n\nThe Sarna is a river.\n", encoding="utf-8")
    import_card(tmp_path / "c.json", lore)
    vault = load_vault(lore)
    assert vault.errors == [] and "sarna" in vault.npcs["mirela-stoica"].knows
    assert [s.heading for s in vault.entities["sarna"].sections] == ["Lore"]


# --- bad input ------------------------------------------------------------------------------------------

def _bad(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    lore = tmp_path / "lore"
    lore.mkdir(exist_ok=True)
    with pytest.raises(LorekitError) as info:
        import_card(path, lore)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)) and "fix" in message
    assert list(lore.iterdir()) == []  # nothing written
    return message


def test_png_without_a_chara_chunk(tmp_path):
    assert "this PNG has no `chara` tEXt chunk" in _bad(tmp_path, "plain.png", _png())


def test_v1_card_without_spec(tmp_path):
    v1 = {"name": "Old", "description": "d", "personality": "p", "first_mes": "hi", "mes_example": "", "scenario": ""}
    message = _bad(tmp_path, "v1.json", json.dumps(v1).encode())
    assert "a V1 card (no `spec`)" in message and "export it again" in message


def test_broken_base64_and_broken_json(tmp_path):
    image, end = _png()[:-12], _png()[-12:]  # a good image, and its IEND chunk
    broken = image + _chunk(b"tEXt", b"chara\0" + b"not base64 at all!!") + end
    assert "the `chara` chunk is not valid base64" in _bad(tmp_path, "b64.png", broken)
    assert "broken JSON at line 1" in _bad(tmp_path, "broken.json", b'{"spec": "chara_card_v2", "data": {')
    inside = image + _chunk(b"tEXt", b"chara\0" + base64.b64encode(b"{nope")) + end
    assert "broken JSON" in _bad(tmp_path, "inside.png", inside)


def test_a_card_over_5_mb(tmp_path):
    card = _card()
    card["data"]["description"] = "x" * (5 * 1024 * 1024)
    message = _bad(tmp_path, "huge.json", json.dumps(card).encode())
    assert "over the 5 MB limit" in message


def test_fields_of_the_wrong_type_and_other_specs(tmp_path):
    card = _card()
    card["data"]["first_mes"] = 42
    assert "`data.first_mes` must be text, not int" in _bad(tmp_path, "type.json", json.dumps(card).encode())
    card = _card()
    card["data"]["character_book"]["entries"][1]["keys"] = "Lamp Guild"
    assert "`data.character_book.entries[1].keys` must be a list of texts" in \
        _bad(tmp_path, "keys.json", json.dumps(card).encode())
    assert "unknown card spec `chara_card_v9`" in _bad(tmp_path, "v9.json", b'{"spec": "chara_card_v9", "data": {}}')
    assert "not a PNG file" in _bad(tmp_path, "fake.png", b"GIF89a....")


# --- export ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("cards")
    result = export_cards(OBSIDIAN, out)
    return out, result


def test_cards_writes_json_and_png_per_npc(exported, capsys, tmp_path):
    out, result = exported
    assert sorted(p.name for p in out.iterdir()) == ["aelfric-dunn.json", "aelfric-dunn.png",
                                                     "zoe-varga.json", "zoe-varga.png"]
    assert main(["cards", str(OBSIDIAN), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'zoe-varga.json'} and {tmp_path / 'zoe-varga.png'}" in printed
    zoe = json.loads((out / "zoe-varga.json").read_text(encoding="utf-8"))
    assert zoe["spec"] == "chara_card_v2" and zoe["spec_version"] == "2.0"
    data = zoe["data"]
    assert data["name"] == "Zoë Varga" and data["first_mes"] == "Mind the nets, love."
    assert data["personality"] == 'Quick and wry; calls everyone "love".'
    book = {e["name"]: e for e in data["character_book"]["entries"]}
    assert set(book) == {"Gullhaven", "Net Menders", "Tar Boats"}
    assert book["Tar Boats"]["keys"] == ["Tar Boats", "the Tarrers", "Black Hulls"]
    assert "Population: 800." in book["Gullhaven"]["content"] and "Ruler: Ælfric Dunn." in book["Gullhaven"]["content"]
    for entry in data["character_book"]["entries"]:
        assert set(entry) >= {"keys", "content", "extensions", "enabled", "insertion_order"}


def test_cards_leave_every_secret_out(exported):
    out, _ = exported
    from tests.test_lore_secrets import SECRET_WORDS

    for name in ("zoe-varga", "aelfric-dunn"):
        text = (out / f"{name}.json").read_text(encoding="utf-8")
        embedded = base64.b64decode(dict((k, v) for k, v in (
            body.split(b"\0", 1) for kind, body in _read_chunks((out / f"{name}.png").read_bytes()) if kind == b"tEXt"
        ))[b"chara"]).decode("utf-8")
        for words in SECRET_WORDS:
            assert words not in text and words not in embedded, (name, words)
    aelfric = json.loads((out / "aelfric-dunn.json").read_text(encoding="utf-8"))["data"]
    court = next(e for e in aelfric["character_book"]["entries"] if e["name"] == "Salt Court")
    assert "white gull" in court["content"]  # its open section is there, its `## Secret` is not


def test_the_png_is_a_real_image_with_the_card_inside(exported):
    out, _ = exported
    data = (out / "zoe-varga.png").read_bytes()
    chunks = _read_chunks(data)
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert chunks[0][0] == b"IHDR" and (width, height) == (400, 600)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    card = read_card(out / "zoe-varga.png")
    assert card.name == "Zoë Varga" and card.spec == "chara_card_v2"
    pil = pytest.importorskip("PIL.Image")
    with pil.open(out / "zoe-varga.png") as im:
        im.load()
        assert im.size == (400, 600) and im.mode == "RGB"
        assert json.loads(base64.b64decode(im.text["chara"]))["data"]["name"] == "Zoë Varga"


def test_the_png_is_the_portrait_the_npc_page_embeds(tmp_path):
    lore = _vault_dir(tmp_path)
    import_card(MIRELA, lore)
    page = lore / "characters" / "Mirela Stoica.md"
    page.write_text(page.read_text(encoding="utf-8").replace("# Mirela Stoica\n", "# Mirela Stoica\n\n![[mirela.png]]\n"),
                    encoding="utf-8")
    (lore / "images").mkdir()
    portrait = _png()
    (lore / "images" / "mirela.png").write_bytes(portrait)
    result = export_cards(lore, tmp_path / "out")
    assert result.cards[0].portrait == "images/mirela.png"
    chunks = _read_chunks((tmp_path / "out" / "mirela-stoica.png").read_bytes())
    assert [b for k, b in chunks if k == b"IDAT"] == [b for k, b in _read_chunks(portrait) if k == b"IDAT"]
    assert read_card(tmp_path / "out" / "mirela-stoica.png").name == "Mirela Stoica"


def test_cards_refuse_a_vault_with_errors(tmp_path):
    with pytest.raises(LorekitError, match=r"error\(s\) in the lore, first: .*NPC fields both under"):
        export_cards(FIXTURES / "broken" / "npc_both_forms", tmp_path)
