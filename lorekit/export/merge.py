"""Base GGUF + LoRA -> one merged GGUF (`model.gguf`).

Each adapted weight is dequantized with `gguf.quants.dequantize`, gets `scale * B @ A` added, and is
written back; every other tensor and all metadata (tokenizer included) are carried over, and the
family's chat template is added when the base has none.

Types: `f16` and `q8_0` are written by the `gguf` package. `base` keeps the base's quantization: with
llama-cpp-python installed, an f16 merge is re-quantized by llama.cpp's own quantizer to the base's
file type (Q4_K_M and every other type llama.cpp knows; untouched tensors that already have the type
the quantizer picks are copied as they are); without it, untouched tensors are copied
byte for byte and each merged tensor is written in its own type when the `gguf` package can write
it, otherwise in the nearest more precise type it can (Q4_K -> Q5_0, Q6_K -> Q8_0).
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


def merge(base: GGUFFile, adapter: LoraAdapter | None, out: Path, mtype: str = "base",
          chat_template: str | None = None) -> MergeResult:
    """Write base + adapter to `out` as `mtype` ("base" | "f16" | "q8_0")."""
    base_ftype = int(base.get("general.file_type", 1))
    if mtype == "base" and base_ftype in (0, 1, 32):
        mtype = {0: "f32", 1: "f16", 32: "bf16"}[base_ftype]
    if mtype in ("f16", "q8_0", "f32", "bf16"):
        _write(base, adapter, out, mtype, chat_template)
        return MergeResult(out, mtype, "gguf", _count(adapter))
    if mtype != "base":
        raise LorekitError(f"export type {mtype!r} is not one of base, f16, q8_0")
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
    return len(adapter.weights) if adapter else 0


def _write(base: GGUFFile, adapter: LoraAdapter | None, out: Path, mode: str, chat_template: str | None) -> None:
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


def _plan(base: GGUFFile, adapter: LoraAdapter | None, name: str, mode: str) -> TensorOut:
    import gguf

    T = gguf.GGMLQuantizationType
    src = base.tensors[name]
    shape = base.shape(name)
    touched = adapter is not None and name in adapter.weights
    if mode in ("per-tensor", "f16-merged") and not touched:
        return TensorOut(name, shape, src.tensor_type, lambda: src.data)
    if len(shape) < 2 or src.tensor_type == T.F32 and not touched:
        qtype = T.F32 if src.tensor_type == T.F32 or len(shape) < 2 else T.F16
    elif mode == "per-tensor":
        qtype = src.tensor_type if writable(src.tensor_type, shape) else _nearest(src.tensor_type, shape)
    else:
        qtype = {"f16": T.F16, "f16-merged": T.F16, "f32": T.F32, "bf16": T.BF16, "q8_0": T.Q8_0}[mode]
        if not writable(qtype, shape):
            qtype = T.F16

    def make() -> np.ndarray:
        weight = base.array(name)
        if touched:
            weight = weight + adapter.delta(name)
        return encode(weight, qtype)

    return TensorOut(name, shape, qtype, make)


def _nearest(qtype, shape):
    """A type the gguf package writes with at least the precision of `qtype`."""
    import gguf

    T = gguf.GGMLQuantizationType
    bits = gguf.GGML_QUANT_SIZES[qtype][1] * 8 / gguf.GGML_QUANT_SIZES[qtype][0]
    for candidate in (T.Q5_0, T.Q8_0, T.F16):
        cbits = gguf.GGML_QUANT_SIZES[candidate][1] * 8 / gguf.GGML_QUANT_SIZES[candidate][0]
        if cbits >= bits and writable(candidate, shape):
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
