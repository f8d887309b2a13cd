"""Base GGUF + LoRA (+ trained token rows) -> one merged GGUF (`model.gguf`).

Each adapted weight is dequantized with `gguf.quants.dequantize`, gets `scale * B @ A` added (trained
token rows replace their rows of `token_embd`, which Gemma ties to the output layer), and is written
back; every other tensor and all metadata (tokenizer included) are carried over, and the family's
chat template is added when the base has none.

Types:
- `auto` (default): untouched tensors keep the base's bytes and types; each changed tensor is written
  in q8_0, or in its own type when that is already as precise (q8_0, f16, f32). Re-quantizing a
  merged weight to a 4-5 bit type rounds most of a trained LoRA's small change away (the merged
  weight snaps back to the base's grid points; bench/results/export_270m.json has the figures), and
  q8_0 keeps it. Trained token rows are re-encoded alone; the other rows keep their bytes.
- `f16` and `q8_0`: every weight in that type, written by the `gguf` package.
- `base`: the base's own file type. With llama-cpp-python installed, an f16 merge is re-quantized by
  llama.cpp's quantizer (Q4_K_M and every other type llama.cpp knows; untouched tensors that already
  have the type the quantizer picks are copied as they are); without it, untouched tensors are copied
  byte for byte and each merged tensor is written in its own type when the `gguf` package can write
  it, otherwise in the nearest more precise type it can (Q4_K -> Q5_0, Q6_K -> Q8_0). Smallest, but
  the verification may find the LoRA's effect lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorekit.errors import LorekitError
from lorekit.export.gguf_util import (
    FTYPE,
    FTYPE_NAMES,
    GGUFFile,
    TensorOut,
    copy_metadata,
    encode,
    writable,
    write_streaming,
)
from lorekit.export.lora_gguf import LoraAdapter

log = logging.getLogger(__name__)


@dataclass
class MergeResult:
    path: Path
    type: str  # what was written: "f16", "q8_0", "Q4_K_M", ...
    method: str  # "gguf" | "llama.cpp quantizer" | "per-tensor"
    merged_tensors: int


def merge(base: GGUFFile, adapter: LoraAdapter | None, out: Path, mtype: str = "auto",
          chat_template: str | None = None) -> MergeResult:
    """Write base + adapter to `out` as `mtype` ("auto" | "base" | "f16" | "q8_0")."""
    base_ftype = int(base.get("general.file_type", 1))
    if mtype in ("auto", "base") and base_ftype in (0, 1, 32):
        mtype = {0: "f32", 1: "f16", 32: "bf16"}[base_ftype]
    if mtype in ("f16", "q8_0", "f32", "bf16"):
        _write(base, adapter, out, mtype, chat_template)
        return MergeResult(out, mtype, "gguf", _count(adapter))
    if mtype == "auto":
        types = _write(base, adapter, out, "auto", chat_template)
        name = FTYPE_NAMES.get(base_ftype, str(base_ftype))
        return MergeResult(out, "+".join([name, *types]), "per-tensor", _count(adapter))
    if mtype != "base":
        raise LorekitError(f"export type {mtype!r} is not one of auto, base, f16, q8_0")
    quantize = _llama_quantizer()
    if quantize is None:
        log.info("llama-cpp-python is not installed: keeping the base's types per tensor")
        _write(base, adapter, out, "per-tensor", chat_template)
        return MergeResult(out, f"{FTYPE_NAMES.get(base_ftype, base_ftype)} (merged tensors re-typed)",
                           "per-tensor", _count(adapter))
    with tempfile.TemporaryDirectory(prefix=".merge-", dir=out.parent) as tmp:
        # Merged tensors go to the quantizer as f16; untouched ones keep their bytes, and llama.cpp
        # copies a tensor unchanged when it already has the type it would choose for it.
        staged = Path(tmp) / "merged-f16.gguf"
        _write(base, adapter, staged, "f16-merged", chat_template)
        quantize(staged, out, base_ftype)
    return MergeResult(out, FTYPE_NAMES.get(base_ftype, str(base_ftype)), "llama.cpp quantizer", _count(adapter))


def _count(adapter: LoraAdapter | None) -> int:
    return len(adapter.touched) if adapter else 0


def _write(base: GGUFFile, adapter: LoraAdapter | None, out: Path, mode: str,
           chat_template: str | None) -> list[str]:
    """Write the merged file; returns the names of the types tensors were given that differ from the base's."""
    import gguf

    plan = [_plan(base, adapter, name, mode) for name in base.tensors]

    def metadata(writer) -> None:
        skip = {"general.file_type"}
        copy_metadata(base, writer, skip)
        ftype = FTYPE.get(mode, base.get("general.file_type", 1))
        writer.add_file_type(int(ftype))
        if chat_template and base.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE) is None:
            writer.add_chat_template(chat_template)

    write_streaming(out, base.arch, metadata, plan)
    log.info("wrote %s (%s, %d tensors)", out, mode, len(plan))
    return sorted({t.qtype.name for t in plan if t.qtype != base.tensors[t.name].tensor_type})


def _plan(base: GGUFFile, adapter: LoraAdapter | None, name: str, mode: str) -> TensorOut:
    src = base.tensors[name]
    shape = base.shape(name)
    touched = adapter is not None and name in adapter.touched
    if mode in ("per-tensor", "f16-merged", "auto") and not touched:
        return TensorOut(name, shape, src.tensor_type, lambda: src.data)
    qtype = _type_for(src.tensor_type, shape, mode, touched)
    if touched and name not in adapter.weights and qtype == src.tensor_type:
        # only trained token rows change: re-encode those rows, every other row keeps its bytes
        return TensorOut(name, shape, qtype, lambda: _splice_rows(src, qtype, adapter.token_rows))

    def make() -> np.ndarray:
        weight = base.array(name)
        return encode(adapter.apply(name, weight) if touched else weight, qtype)

    return TensorOut(name, shape, qtype, make)


def _type_for(src_type, shape: tuple[int, ...], mode: str, touched: bool):
    import gguf

    T = gguf.GGMLQuantizationType
    if len(shape) < 2 or src_type == T.F32 and not touched:
        return T.F32 if src_type == T.F32 or len(shape) < 2 else T.F16
    if mode == "per-tensor":
        return src_type if writable(src_type, shape) else _nearest(src_type, shape)
    if mode == "auto":
        if _bits(src_type) >= _bits(T.Q8_0) and writable(src_type, shape):
            return src_type
        return T.Q8_0 if writable(T.Q8_0, shape) else T.F16
    qtype = {"f16": T.F16, "f16-merged": T.F16, "f32": T.F32, "bf16": T.BF16, "q8_0": T.Q8_0}[mode]
    return qtype if writable(qtype, shape) else T.F16


def _bits(qtype) -> float:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return size * 8 / block


def _splice_rows(src, qtype, rows) -> np.ndarray:
    """The tensor's stored data with the trained rows re-encoded in its own type."""
    data = np.array(src.data, copy=True)
    data = data.reshape(data.shape[0], -1)
    data[rows.indices] = np.asarray(encode(rows.values, qtype)).reshape(len(rows.indices), -1)
    return data


def _nearest(qtype, shape):
    """A type the gguf package writes with at least the precision of `qtype`."""
    import gguf

    T = gguf.GGMLQuantizationType
    for candidate in (T.Q5_0, T.Q8_0, T.F16):
        if _bits(candidate) >= _bits(qtype) and writable(candidate, shape):
            return candidate
    return T.F16


@contextlib.contextmanager
def quiet_native_output():
    """Silence C-level stdout/stderr (llama.cpp's progress lines) for the duration."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _llama_quantizer():
    """llama.cpp's quantizer through llama-cpp-python, or None when it is not installed."""
    try:
        import ctypes

        import llama_cpp
    except ImportError:
        return None

    def quantize(src: Path, dst: Path, ftype: int) -> None:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.nthread = max(1, min(4, os.cpu_count() or 1))
        params.allow_requantize = True  # untouched tensors arrive quantized; most are copied as they are
        with quiet_native_output():  # llama.cpp prints a line per tensor on the C streams
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
        if rc != 0:
            raise LorekitError(f"{dst}: llama.cpp could not quantize the merged model to "
                               f"{FTYPE_NAMES.get(ftype, ftype)} (code {rc}); use --type f16 or --type q8_0")

    return quantize
