"""Safetensors read and written one tensor (and one block of rows) at a time.

A merged export must not hold the model in memory: the source headers are read, each output shard's
header is written first (every size is known from the source shapes), then each tensor's bytes are
copied, converted or merged in blocks of rows. Peak memory is one block, or one whole tensor for
the few tensors a LoRA changes. The format: 8 bytes little-endian header length, a JSON header
`{name: {dtype, shape, data_offsets}}`, then the tensors' bytes back to back.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lorekit.errors import LorekitError

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4,
         "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOATS = ("F64", "F32", "F16", "BF16")  # what the export writes as BF16; 8-bit floats stay as they are
BLOCK_BYTES = 16 << 20  # rows read and converted at a time


@dataclass(frozen=True)
class Tensor:
    """One tensor of a source file: where its bytes are and what it becomes."""

    name: str
    file: Path
    start: int  # absolute offset of its first byte in `file`
    dtype: str  # source safetensors dtype
    shape: tuple[int, ...]

    @property
    def out_dtype(self) -> str:
        return "BF16" if self.dtype in FLOATS else self.dtype

    @property
    def out_bytes(self) -> int:
        return math.prod(self.shape) * SIZES[self.out_dtype]

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1


def read_header(path: Path) -> list[Tensor]:
    """The tensors of one safetensors file, in the order of their bytes."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise LorekitError(f"{path}: not a safetensors file (shorter than its header); re-download it")
        (size,) = struct.unpack("<Q", head)
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LorekitError(f"{path}: unreadable safetensors header; the file is damaged, re-download it") from None
    header.pop("__metadata__", None)
    out = []
    for name, info in header.items():
        if info["dtype"] not in SIZES:
            raise LorekitError(f"{path}: tensor {name} has dtype {info['dtype']}, which LoreKit cannot copy")
        out.append(Tensor(name, Path(path), 8 + size + info["data_offsets"][0], info["dtype"], tuple(info["shape"])))
    return sorted(out, key=lambda t: t.start)


def read_folder(folder: Path) -> list[Tensor]:
    """Every tensor of a Hugging Face model folder (sharded with an index, or one file)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise LorekitError(f"{folder}: no *.safetensors weights; give the folder of a Hugging Face model")
    return [t for name in files for t in read_header(folder / name)]


def shards(tensors: list[Tensor], max_bytes: int) -> list[list[Tensor]]:
    """Split into consecutive groups of at most `max_bytes` (a larger tensor gets a shard of its own)."""
    groups: list[list[Tensor]] = [[]]
    size = 0
    for t in tensors:
        if groups[-1] and size + t.out_bytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.out_bytes
    return [g for g in groups if g]


def shard_names(n: int) -> list[str]:
    return ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def write_file(path: Path, tensors: list[Tensor], data: Callable[[Tensor], Iterable[bytes]]) -> None:
    """Write `tensors` (their output dtype and shape) to `path`, taking each one's bytes from `data`."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": t.out_dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.out_bytes]}
        offset += t.out_bytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for t in tensors:
            written = 0
            for chunk in data(t):
                f.write(chunk)
                written += len(chunk)
            if written != t.out_bytes:  # a bug, not a user error: never leave a file that lies about itself
                raise RuntimeError(f"{path}: {t.name} got {written} bytes, its header says {t.out_bytes}")


def blocks(t: Tensor) -> Iterator[tuple[int, int, bytes]]:
    """(first row, end row, raw source bytes) of `t`, a block of rows at a time."""
    row_bytes = math.prod(t.shape[1:]) * SIZES[t.dtype] if t.shape else SIZES[t.dtype]
    step = max(1, BLOCK_BYTES // max(1, row_bytes))
    with open(t.file, "rb") as f:
        f.seek(t.start)
        for a in range(0, t.rows, step):
            b = min(t.rows, a + step)
            raw = f.read((b - a) * row_bytes)
            if len(raw) != (b - a) * row_bytes:
                raise LorekitError(f"{t.file}: ends inside tensor {t.name}; the file is truncated, re-download it")
            yield a, b, raw


def read_tensor(t: Tensor):
    """The whole tensor as a torch tensor of its source dtype (for the few tensors a LoRA changes)."""
    raw = b"".join(raw for _, _, raw in blocks(t))
    return from_bytes(raw, t.dtype).reshape(t.shape)


def from_bytes(raw: bytes, dtype: str):
    import torch

    return torch.frombuffer(bytearray(raw), dtype=torch_dtype(dtype))


def to_bytes(x) -> bytes:
    import torch

    return x.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def torch_dtype(name: str):
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
            "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}[name]
