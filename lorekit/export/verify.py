"""Check an export: read the GGUFs back, load them with llama.cpp, compare logits with PyTorch.

Figures per comparison (next-token logits at the end of each prompt, same token ids everywhere):
- `top1`: share of prompts where both pick the same next token;
- `top1_close`: share where llama.cpp's pick is within the allowed error of PyTorch's best logit
  (a near-tie that flips inside the tolerance is not an error; tiny random models have many);
- `max_abs`: the largest logit difference; `rel`: that over PyTorch's largest |logit|;
- `effect`: mean cosine between what the LoRA changes in llama.cpp (this file minus the base GGUF
  alone) and what it changes in PyTorch (merged minus base): 1 = the same change, ~0 = the LoRA is
  missing or another one. On a quantized file the re-rounding of the merged weights is the same
  size as a small LoRA's effect, so this is the figure that still tells them apart.
Limits depend on the least precise type among the tensors that differ from the base GGUF (the
others are the very weights PyTorch runs): float types must agree closely, quantized ones within what
the quantization costs.
Besides the plain prompts, two prompts exercise the chat format's own tokens: one ends right after
an answer (the next token should be the end-of-turn token) and one holds a whole earlier exchange.
Trained token rows (the embeddings of those tokens) thus show in the figures, and `end_of_turn`
records that token's logit on the answer prompt in each run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorekit import chat_formats, llama_log
from lorekit.errors import LorekitError
from lorekit.export.gguf_util import GGUFFile

log = logging.getLogger(__name__)

PROMPTS = [
    "Who leads the Ash Guild?",
    "Greetings, traveller. What brings you here?",
    "Tell me about the old tower by the river.",
    "What do you know about the dragon?",
    "Where can I buy a sword?",
    "Have you heard any rumours lately?",
    "Who is the captain at the harbour?",
    "What year was the long winter?",
]

# (question, answer): the answer prompt stops after the answer; the two-turn prompt holds the exchange
EXCHANGE = ("Who leads the Ash Guild?", "Mara Vell leads the Ash Guild.")

# relative max-difference limit and minimum top1_close per weight type of the file llama.cpp runs
# Even with f32 weights llama.cpp differs from PyTorch: its CPU GELU reads an f16 table and its KV
# cache is f16. On random tiny Gemma 4 models that reaches rel 0.03 (emulating the f16 GELU in
# PyTorch brings it to 0.002); a conversion bug (a missing norm offset, a wrong RoPE) gives ~1.
# (rel, top1_close, effect) limits
LIMITS = {"f32": (0.05, 1.0, 0.9), "f16": (0.08, 1.0, 0.9), "bf16": (0.1, 1.0, 0.85), "q8_0": (0.12, 1.0, 0.85)}
QUANTIZED_LIMIT = (0.35, 0.75, 0.5)  # Q4_K_M and friends: re-quantizing the merged weights costs this much

# ids -> {"adapted": with the adapter, "base": without it, "lora_only": with the LoRA but the base's token
# rows (only when the adapter has trained rows)}: logits at the last position of each prompt
TorchLogits = Callable[[list[list[int]]], dict[str, list[np.ndarray]]]


@dataclass
class Comparison:
    top1: float
    top1_close: float
    max_abs: float
    rel: float
    effect: float | None = None

    def passed(self, limit: tuple[float, ...]) -> bool:
        effect_ok = self.effect is None or self.effect >= limit[2]
        return self.rel <= limit[0] and self.top1_close >= limit[1] and effect_ok

    def as_dict(self) -> dict:
        return {k: None if v is None else round(v, 6) for k, v in vars(self).items()}


def read_back(path: Path, expect_type: str, arch: str) -> dict:
    """Open a written GGUF with the gguf package and report what it holds."""
    g = GGUFFile.open(path)
    kind = str(g.get("general.type", "model"))
    if g.arch != arch or kind != expect_type:
        raise LorekitError(f"{path}: read back as {kind} of arch {g.arch!r}, expected {expect_type} of {arch!r}")
    types: dict[str, int] = {}
    for t in g.reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    info = {"arch": g.arch, "type": kind, "tensors": len(g.reader.tensors), "tensor_types": types,
            "metadata_keys": len(g.keys())}
    if kind == "adapter":
        info["lora_alpha"] = float(g.get("adapter.lora.alpha", 0.0))
    else:
        info["chat_template"] = g.get("tokenizer.chat_template") is not None
        info["vocab"] = len(g.reader.fields["tokenizer.ggml.tokens"].data)
    return info


def prompts_for(family: str, n: int) -> list[str]:
    """`n` plain prompts, then the answer prompt and the two-turn prompt."""
    fmt = chat_formats.get(family)
    plain = [fmt.render([{"role": "user", "content": p}], add_generation_prompt=True) for p in PROMPTS[:n]]
    asked = [{"role": "user", "content": EXCHANGE[0]}]
    answered = fmt.render(asked, add_generation_prompt=True) + EXCHANGE[1]
    exchange = [*asked, {"role": "assistant", "content": EXCHANGE[1]}, {"role": "user", "content": PROMPTS[5]}]
    return [*plain, answered, fmt.render(exchange, add_generation_prompt=True)]


@contextlib.contextmanager
def llama(model_path: Path, lora_path: Path | None = None):
    try:
        from llama_cpp import Llama
    except ImportError:
        raise LorekitError("llama-cpp-python is not installed, so the export cannot be checked with llama.cpp: "
                           "pip install 'lorekit[serve]' (or export with --no-verify)") from None
    llama_log.route()
    kwargs = {"lora_path": str(lora_path)} if lora_path else {}
    llm = Llama(model_path=str(model_path), n_ctx=512, n_batch=512, n_threads=max(1, min(4, os.cpu_count() or 1)),
                verbose=False, seed=0, **kwargs)
    try:
        yield llm
    finally:
        llm.close()


def tokenize(llm, texts: list[str]) -> list[list[int]]:
    return [llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) for t in texts]


def llama_logits(llm, ids: list[list[int]]) -> list[np.ndarray]:
    out = []
    for seq in ids:
        llm.reset()
        llm.eval(seq)
        # Without logits_all (a 512 x vocab buffer) llama-cpp-python keeps only the context's last row.
        row = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        out.append(np.array(row, dtype=np.float32))
    return out


def compare(ref: list[np.ndarray], got: list[np.ndarray], tie_rel: float = 0.0,
            ref_base: list[np.ndarray] | None = None, got_base: list[np.ndarray] | None = None) -> Comparison:
    """Compare logits row by row; `tie_rel` * max|ref| is how far below the best a pick may be.
    With both base runs given, also how alike the LoRA's effect is on each side (`effect`)."""
    top1 = close = 0
    max_abs = scale = 0.0
    effects = []
    if ref_base is not None and got_base is not None:
        effects = [_cosine(g - gb, r - rb) for r, g, rb, gb in zip(ref, got, ref_base, got_base, strict=True)]
    for r, g in zip(ref, got, strict=True):
        n = min(len(r), len(g))  # a GGUF vocab may be padded past the checkpoint's rows
        r, g = r[:n], g[:n]
        diff = float(np.max(np.abs(r - g)))
        max_abs, scale = max(max_abs, diff), max(scale, float(np.max(np.abs(r))))
        top1 += int(np.argmax(r) == np.argmax(g))
        close += int(r[np.argmax(g)] >= r.max() - tie_rel * float(np.max(np.abs(r))))
    n = max(1, len(ref))
    effect = float(np.mean(effects)) if effects else None
    return Comparison(top1 / n, close / n, max_abs, max_abs / max(scale, 1e-6), effect)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 else 0.0


def limit_for(gguf_path: Path, base_path: Path | None = None) -> tuple[float, float, float]:
    """Limits for the least precise weight type in the file; with `base_path`, among the tensors that
    differ from the base only (untouched tensors are the very weights PyTorch dequantized)."""
    import gguf

    g = GGUFFile.open(gguf_path)
    base = GGUFFile.open(base_path).tensors if base_path else {}
    T = gguf.GGMLQuantizationType
    types = [t.tensor_type for name, t in g.tensors.items() if len(t.shape) >= 2 and not _same(t, base.get(name))]
    types = types or [t.tensor_type for t in g.tensors.values() if len(t.shape) >= 2]
    worst = min(types, key=lambda q: gguf.GGML_QUANT_SIZES[q][1] / gguf.GGML_QUANT_SIZES[q][0])
    name = {T.F32: "f32", T.F16: "f16", T.BF16: "bf16", T.Q8_0: "q8_0"}.get(worst)
    return LIMITS[name] if name else QUANTIZED_LIMIT


def _same(tensor, other) -> bool:
    return (other is not None and other.tensor_type == tensor.tensor_type
            and np.array_equal(np.asarray(tensor.data), np.asarray(other.data)))


def verify(export_dir: Path, base_gguf: Path, family: str, torch_logits: TorchLogits | None,
           n_prompts: int = 4, token_rows: list[int] | None = None) -> dict:
    """Run every check on `export_dir` (model.gguf, adapter.gguf); returns the figures for export.json.
    `token_rows`: the adapter's trained token ids, which model.gguf has and adapter.gguf cannot."""
    from lorekit.export.lora_gguf import TOKEN_ROWS_NOT_IN_ADAPTER

    model, adapter = export_dir / "model.gguf", export_dir / "adapter.gguf"
    arch = GGUFFile.open(base_gguf).arch
    report: dict = {"read_back": {"model.gguf": read_back(model, "model", arch)}}
    if adapter.is_file():
        report["read_back"]["adapter.gguf"] = read_back(adapter, "adapter", arch)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        log.warning("llama-cpp-python is not installed: the export was read back but not run; "
                    "pip install 'lorekit[serve]' and run `lorekit export OUT --check`")
        return {**report, "passed": None, "skipped": "llama-cpp-python not installed", "comparisons": {}}
    texts = prompts_for(family, max(1, min(n_prompts, len(PROMPTS))))
    with llama(model) as llm:
        ids = tokenize(llm, texts)
        eot = tokenize(llm, [chat_formats.get(family).end_of_turn])[0]
        runs = {"model.gguf": llama_logits(llm, ids)}
    with llama(base_gguf) as llm:
        plain = llama_logits(llm, ids)
    if adapter.is_file():
        with llama(base_gguf, adapter) as llm:
            runs["base+adapter.gguf"] = llama_logits(llm, ids)
    report["prompts"] = len(ids)
    report["prompt_tokens"] = [len(s) for s in ids]
    if token_rows:
        report["token_rows"] = token_rows
        if adapter.is_file():
            report["notes"] = [TOKEN_ROWS_NOT_IN_ADAPTER]
    ref = torch_logits(ids) if torch_logits is not None else None
    checks = _comparisons(runs, plain, ref, model, base_gguf, bool(token_rows))
    report["comparisons"] = {k: {**c.as_dict(), "limit_rel": lim[0], "limit_top1_close": lim[1],
                                 "limit_effect": lim[2], "passed": c.passed(lim)} for k, (c, lim) in checks.items()}
    if len(eot) == 1:
        report["end_of_turn"] = _end_of_turn(eot[0], {**runs, "base.gguf": plain}, ref)
    report["passed"] = all(c["passed"] for c in report["comparisons"].values()) if checks else None
    if not checks:  # no PyTorch, and adapter.gguf cannot stand in for model.gguf's trained rows
        report["skipped"] = "no logit comparison: install torch and peft, then `lorekit export OUT --check`"
    return report


def _comparisons(runs: dict, plain: list, ref: dict | None, model: Path, base_gguf: Path,
                 has_rows: bool) -> dict[str, tuple[Comparison, tuple]]:
    checks = {}
    if ref is not None:
        lim = limit_for(model, base_gguf)
        checks["model.gguf vs torch"] = (compare(ref["adapted"], runs["model.gguf"], lim[0], ref["base"], plain), lim)
        if "base+adapter.gguf" in runs:
            # adapter.gguf cannot hold trained token rows: compare it with the LoRA alone
            key, want = (("base+adapter.gguf vs torch (LoRA only)", ref["lora_only"]) if has_rows
                         else ("base+adapter.gguf vs torch", ref["adapted"]))
            lim = limit_for(base_gguf)
            checks[key] = (compare(want, runs["base+adapter.gguf"], lim[0], ref["base"], plain), lim)
    elif "base+adapter.gguf" in runs and not has_rows:
        # no PyTorch model: the two llama.cpp routes must still agree with each other
        lim = max(limit_for(model, base_gguf), limit_for(base_gguf))
        checks["model.gguf vs base+adapter.gguf"] = (
            compare(runs["base+adapter.gguf"], runs["model.gguf"], lim[0], plain, plain), lim)
    return checks


def _end_of_turn(token: int, runs: dict, ref: dict | None) -> dict:
    """On the answer prompt (second to last): the end-of-turn token's logit and whether it is the pick."""
    rows = {name: logits[-2] for name, logits in runs.items()}
    if ref is not None:
        rows = {"torch": ref["adapted"][-2], "torch base": ref["base"][-2], **rows}
    return {"token": token, **{name: {"logit": round(float(r[token]), 4), "top1": bool(int(np.argmax(r)) == token)}
                               for name, r in rows.items()}}
