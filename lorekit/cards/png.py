"""PNG chunks, read and written with `struct` and `zlib` only: enough to carry a character card.

A card PNG is an ordinary image with one extra `tEXt` chunk, keyword `chara` (V2) or `ccv3` (V3),
whose text is the card's JSON in base64. `text_chunks` reads those; `with_text` puts one into any
PNG (a portrait from the vault); `plain_card` draws a simple image when the vault has none.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("chara", "ccv3")


class PngError(ValueError):
    """The bytes are not a PNG this module can read (the message says why)."""


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk up to IEND. CRCs are not checked: card tools differ there."""
    if not data.startswith(SIGNATURE):
        raise PngError("not a PNG file (its first bytes are not the PNG signature)")
    out, at = [], len(SIGNATURE)
    while True:
        if at + 8 > len(data):
            raise PngError("the PNG ends in the middle of a chunk (the file is cut short)")
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        end = at + 8 + length
        if end + 4 > len(data):
            shown = kind.decode("ascii") if kind.isalpha() else "0x" + kind.hex()
            raise PngError(f"chunk `{shown}` runs past the end of the file (the file is cut short)")
        out.append((kind, data[at + 8:end]))
        at = end + 4
        if kind == b"IEND":
            return out


def text_chunks(data: bytes) -> dict[str, str]:
    """Keyword -> text of the `tEXt` chunks (the first of each keyword)."""
    out: dict[str, str] = {}
    for kind, body in chunks(data):
        if kind == b"tEXt" and b"\0" in body:
            key, _, text = body.partition(b"\0")
            out.setdefault(key.decode("latin-1"), text.decode("latin-1"))
    return out


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def with_text(data: bytes, keyword: str, text: str) -> bytes:
    """The PNG `data` with one `tEXt` chunk `keyword` (replacing any card chunks it had) before IEND."""
    parts = [SIGNATURE]
    for kind, body in chunks(data):
        if kind == b"tEXt" and body.partition(b"\0")[0].decode("latin-1") in CARD_KEYWORDS:
            continue
        if kind == b"IEND":
            parts.append(chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1")))
        parts.append(chunk(kind, body))
    return b"".join(parts)


def plain_card(seed: str, width: int = 400, height: int = 600) -> bytes:
    """A plain card image: a frame and a panel in two shades of a colour chosen by `seed`."""
    h = hashlib.blake2b(seed.encode("utf-8"), digest_size=3).digest()
    base = bytes(64 + c // 3 for c in h)  # a muted colour
    light = bytes(min(255, c + 90) for c in base)
    dark = bytes(c // 2 for c in base)
    rows = []
    for y in range(height):
        if y < 12 or y >= height - 12:
            row = dark * width
        elif y < 40 or y >= height - 120:
            row = dark * 12 + base * (width - 24) + dark * 12
        else:
            row = dark * 12 + base * 28 + light * (width - 80) + base * 28 + dark * 12
        rows.append(b"\0" + row)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")


def pixels(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines) of an 8-bit RGB PNG without interlacing (for tests and checks)."""
    parts = chunks(data)
    if not parts or parts[0][0] != b"IHDR" or len(parts[0][1]) != 13:
        raise PngError("the PNG does not start with an IHDR chunk")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", parts[0][1])
    if (depth, colour, interlace) != (8, 2, 0):
        raise PngError("only 8-bit RGB PNGs without interlacing are decoded here")
    raw = zlib.decompress(b"".join(body for kind, body in parts if kind == b"IDAT"))
    if len(raw) != height * (1 + 3 * width):
        raise PngError("the image data does not match the image size")
    return width, height, raw
