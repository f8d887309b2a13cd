"""Small helpers over the `gguf` package: read a GGUF's metadata and tensors, copy metadata across.

GGUF stores shapes innermost-first (`ne`), numpy outermost-first: a linear layer with `in` inputs and
`out` outputs is `ne = [in, out]` in the file and `(out, in)` as an array, the same as PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from lorekit.errors import LorekitError
from lorekit.gguf_reader import open_gguf

# File types (llama_ftype) for the merged model, by name.
FTYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}
FTYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    32: "BF16",
}


@dataclass
class GGUFFile:
    """A GGUF opened for reading (memory-mapped): metadata as plain values, tensors by name."""

    path: Path
    reader: Any

    @classmethod
    def open(cls, path: Path | str) -> GGUFFile:
        path = Path(path)
        if not path.is_file():
            raise LorekitError(f"{path}: GGUF file not found (give --base-gguf PATH or --from-hf DIR)")
        try:
            return cls(path, open_gguf(path))
        except Exception as err:  # the reader raises ValueError/struct errors on junk
            raise LorekitError(f"{path}: not a readable GGUF file ({err}); re-download or re-create it") from None

    @property
    def arch(self) -> str:
        return str(self.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        field = self.reader.fields.get(key)
        return default if field is None else field.contents()

    def keys(self) -> list[str]:
        return [k for k in self.reader.fields if not k.startswith("GGUF.")]

    @cached_property
    def tensors(self) -> dict[str, Any]:
        return {t.name: t for t in self.reader.tensors}

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape in numpy order (out, in)."""
        return tuple(int(n) for n in reversed(self.tensors[name].shape))

    def array(self, name: str) -> np.ndarray:
        """The tensor dequantized to float32, numpy order."""
        import gguf

        t = self.tensors[name]
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        return np.asarray(data, dtype=np.float32).reshape(self.shape(name))


def copy_metadata(src: GGUFFile, writer: Any, skip: set[str] = frozenset()) -> None:
    """Copy every key/value of `src` into a GGUFWriter except GGUF.* and `skip`."""
    import gguf

    for key, field in src.reader.fields.items():
        if key.startswith("GGUF.") or key in skip or key == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        if vtype == gguf.GGUFValueType.ARRAY and len(field.types) > 2:
            raise LorekitError(f"{src.path}: nested array metadata `{key}` is not supported")
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)




@dataclass
class TensorOut:
    """One tensor to write: `make()` returns its final data (float32/float16 array or quantized bytes)."""

    name: str
    shape: tuple[int, ...]  # numpy order of the float tensor
    qtype: Any  # gguf.GGMLQuantizationType
    make: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        import gguf

        item = {gguf.GGMLQuantizationType.F32: 4, gguf.GGMLQuantizationType.F16: 2}.get(self.qtype)
        if item is not None:
            return int(np.prod(self.shape)) * item
        return int(np.prod(gguf.quant_shape_to_byte_shape(self.shape, self.qtype)))


def encode(array: np.ndarray, qtype: Any) -> np.ndarray:
    """float32 -> the bytes (or float16/32 array) of `qtype`, with the gguf package's quantizers."""
    import gguf

    return gguf.quants.quantize(np.ascontiguousarray(array, dtype=np.float32), qtype)


def writable(qtype: Any, shape: tuple[int, ...]) -> bool:
    """Whether the gguf package can write `qtype` for a tensor of this shape."""
    import gguf

    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        return False
    return qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) or _has_quantizer(qtype)


def _has_quantizer(qtype: Any) -> bool:
    import gguf

    traits = gguf.quants._type_traits.get(qtype)
    # classes without their own quantize_blocks inherit the abstract one that raises
    return traits is not None and "quantize_blocks" in vars(traits)


def write_streaming(path: Path, arch: str, add_metadata: Callable[[Any], None], tensors: list[TensorOut]) -> None:
    """Write a GGUF one tensor at a time, so a large model never sits in memory whole."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    add_metadata(writer)
    for t in tensors:
        if t.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            dtype = np.float32 if t.qtype == gguf.GGMLQuantizationType.F32 else np.float16
            writer.add_tensor_info(t.name, t.shape, np.dtype(dtype), t.nbytes)
        else:
            byte_shape = gguf.quant_shape_to_byte_shape(t.shape, t.qtype)
            writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.nbytes, raw_dtype=t.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in tensors:
        data = t.make()
        if data.nbytes != t.nbytes:
            raise RuntimeError(f"{t.name}: made {data.nbytes} bytes, expected {t.nbytes}")
        writer.write_tensor_data(data)
    writer.close()
