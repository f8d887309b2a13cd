"""The model: one llama.cpp context, driven by one worker thread, with saved per-conversation state.

llama.cpp contexts are not thread-safe, so exactly one thread (the scheduler's worker) calls into an
`Engine`. Switching between NPCs does not re-process each persona: before the context moves to
another conversation, its KV cache is saved (`llama_state_seq_get_data`) under the conversation's
key; a later turn restores whichever saved state shares the longest token prefix with its prompt,
and llama.cpp then only processes the new suffix. Gemma's sliding-window layers keep their full
cache (`swa_full`), otherwise a restored or truncated cache would miss positions and the prefix
could not be reused.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lorekit.chat_formats import ChatFormat
from lorekit.errors import LorekitError
from lorekit.serve.request import Sampling
from lorekit.serve.textstream import StopScanner

log = logging.getLogger(__name__)

# Prompt tokens go to llama.cpp in chunks sized to take about CHUNK_S seconds at the measured speed,
# so a cancel, a shutdown or a waiting turn never sits behind a long prompt (on a loaded 2-core CPU a
# fixed 128-token chunk took 1-3 s), while a fast machine still gets big, efficient batches.
CHUNK_S = 0.2
CHUNK_MIN, CHUNK_MAX = 16, 512


def default_threads() -> int:
    """Half the cores, at least one: the game next to the server needs the rest. Using every core of a
    busy machine is slower, not faster (llama.cpp's threads wait on each other: measured 2-10x slower
    prompt processing with 2 threads than with 1 on a 2-core machine under load)."""
    import os

    return max(1, (os.cpu_count() or 2) // 2)


@dataclass
class Generation:
    text: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    prompt_ms: float = 0.0
    gen_s: float = 0.0
    first_piece_at: float | None = None  # time.perf_counter() of the first emitted piece

    @property
    def tokens_per_s(self) -> float:
        return round((self.completion_tokens - 1) / self.gen_s, 2) if self.completion_tokens > 1 and self.gen_s else 0.0


@dataclass
class Snapshot:
    tokens: np.ndarray
    data: bytes = field(repr=False)


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.nonzero(a[:n] != b[:n])[0]
    return int(diff[0]) if len(diff) else n


class StateCache:
    """Saved KV states by key (a conversation, a persona, a turn's notes), least recently used evicted
    beyond `max_bytes`. Using a state also counts as using every saved state that is a prefix of it
    (an NPC's persona under its conversations), so the shared bases are evicted last."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[object, Snapshot] = OrderedDict()

    @property
    def bytes(self) -> int:
        return sum(len(s.data) for s in self.entries.values())

    def put(self, key: object, snap: Snapshot) -> None:
        self.entries.pop(key, None)
        self.entries[key] = snap
        self._touch_prefixes(snap.tokens)
        while self.entries and self.bytes > self.max_bytes:
            self.entries.popitem(last=False)

    def best(self, tokens: np.ndarray) -> tuple[object, Snapshot | None, int]:
        best: tuple[object, Snapshot | None, int] = (None, None, 0)
        for key, snap in self.entries.items():
            n = common_prefix(snap.tokens, tokens)
            if n > best[2]:
                best = (key, snap, n)
        if best[1] is not None:
            self.entries.move_to_end(best[0])
            self._touch_prefixes(best[1].tokens[: best[2]])
        return best

    def _touch_prefixes(self, tokens: np.ndarray) -> None:
        for key in [k for k, s in self.entries.items() if len(s.tokens) < len(tokens)
                    and common_prefix(s.tokens, tokens) == len(s.tokens)]:
            self.entries.move_to_end(key)

    def clear(self) -> None:
        self.entries.clear()


def file_signature(*paths: Path | None) -> tuple:
    """Identity of the files a model was loaded from: a rewritten or re-linked file has a new one."""
    sig = []
    for p in paths:
        if p is not None and p.exists():
            link, target = p.lstat(), p.stat()
            sig.append((str(p), link.st_ino, link.st_mtime_ns, target.st_size, target.st_mtime_ns))
    return tuple(sig)


def model_sha256(model: Path, adapter: Path | None) -> str:
    """What /health reports as the model's identity: the SHA-256 of the GGUF (and adapter) served."""
    from lorekit.hashing import file_sha256

    digest = file_sha256(model)
    return f"{digest}+{file_sha256(adapter)}" if adapter else digest


def hash_later(served: Any) -> None:
    """Set `served.sha256` from its `path` and `adapter` in the background: a multi-GB GGUF takes
    seconds to hash, and serving need not wait for it (the in-process and the remote engine alike)."""
    def run() -> None:
        try:
            served.sha256 = model_sha256(served.path, served.adapter)
        except OSError as e:
            log.warning("could not hash %s: %s", served.path, e)

    threading.Thread(target=run, name="lorekit-model-hash", daemon=True).start()


def gguf_family(metadata: dict) -> str:
    """The chat format a GGUF's architecture calls for."""
    arch = str(metadata.get("general.architecture", "")).lower()
    return "gemma4" if arch.startswith("gemma4") else "gemma3"


class Engine:
    def __init__(self, model: Path, adapter: Path | None = None, *, n_ctx: int = 4096, n_batch: int = 512,
                 n_threads: int = 0, n_threads_batch: int = 0, gpu_layers: int = 0, swa_full: bool = True, seed: int = -1,
                 state_cache_mb: int = 512, verbose: bool = False):
        try:
            import llama_cpp
        except ImportError:
            raise LorekitError("llama-cpp-python is not installed; run: pip install 'lorekit[serve]'") from None
        self.path, self.adapter = Path(model), Path(adapter) if adapter else None
        if not self.path.is_file():
            raise LorekitError(f"{self.path}: no such model file (run `lorekit build` or pass --model PATH)")
        if not verbose:
            from lorekit import llama_log

            llama_log.route()
        threads = n_threads or default_threads()
        batch_threads = n_threads_batch or threads
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.path), lora_path=str(self.adapter) if self.adapter else None,
                n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=threads, n_threads_batch=batch_threads,
                n_gpu_layers=gpu_layers, swa_full=swa_full, seed=seed if seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
                verbose=verbose,
            )
        except (ValueError, RuntimeError, OSError) as e:
            raise LorekitError(f"{self.path}: llama.cpp could not load it ({e})") from None
        self._lib = llama_cpp
        self.vocab = self.llm._model.vocab
        self.n_ctx = self.llm.n_ctx()
        self.family = gguf_family(self.llm.metadata)
        self.states = StateCache(state_cache_mb * 1024 * 1024)
        self.live_key: object = None
        self.live_saved = True  # the live state is in `states` as it is: switching away need not save it
        self.loaded_at = time.time()
        self.signature = file_signature(self.path, self.adapter)
        self.sha256: str | None = None  # the model's identity in status and /health, once hashed
        hash_later(self)
        self.prompt_rate = 100.0  # prompt tokens/s, updated as prompts are processed (sizes the chunks)

    # -- tokens -------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Tokens of already-rendered chat text (it carries its own `<bos>`)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def stop_ids(self, fmt: ChatFormat) -> set[int]:
        ids = set()
        for marker in (fmt.end_of_turn, fmt.turn_open):
            toks = self.tokenize(marker)
            if len(toks) == 1:
                ids.add(toks[0])
        return ids

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    # -- per-conversation state ---------------------------------------------------------------

    def _save_live(self, key: object = None) -> None:
        """Save the live state under `key` (default: the live conversation's), unless it is saved already."""
        llm, ctx = self.llm, self.llm._ctx.ctx
        key = self.live_key if key is None else key
        if key is None or llm.n_tokens == 0 or (self.live_saved and key == self.live_key):
            return
        size = self._lib.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        n = self._lib.llama_state_seq_get_data(ctx, buf, size, 0)
        if n:
            self.states.put(key, Snapshot(llm.input_ids[: llm.n_tokens].copy(), bytes(buf)[:n]))
            self.live_saved = self.live_saved or key == self.live_key

    def keep(self, key: object) -> None:
        """Save the live state under `key` as well: a turn's whole prompt and reply, kept for later turns
        that share a prefix of it (the same lore notes), while its conversation moves on."""
        self._save_live(key)

    def _restore(self, snap: Snapshot) -> bool:
        llm, ctx = self.llm, self.llm._ctx.ctx
        mem = self._lib.llama_get_memory(ctx)
        self._lib.llama_memory_clear(mem, True)
        buf = (ctypes.c_uint8 * len(snap.data)).from_buffer_copy(snap.data)
        if not self._lib.llama_state_seq_set_data(ctx, buf, len(snap.data), 0):
            log.warning("restoring a saved prompt state failed; processing the prompt again")
            llm.reset()
            return False
        llm.input_ids[: len(snap.tokens)] = snap.tokens
        llm.n_tokens = len(snap.tokens)
        llm._requires_eval = True
        self.live_saved = False  # saved under the snapshot's key, not (yet) under the live one
        return True

    def prepare(self, key: object, tokens: list[int]) -> int:
        """Put the context in the best state for `tokens`; return how many prompt tokens are reused."""
        llm = self.llm
        want = np.asarray(tokens, dtype=np.intc)
        live = common_prefix(llm.input_ids[: llm.n_tokens], want)
        if key != self.live_key:
            self._save_live()
            self.live_key, self.live_saved = key, False
        _, snap, n = self.states.best(want)
        if snap is not None and n > live and self._restore(snap):
            live = n
        elif snap is not None and n > live:
            live = 0
        return min(live, len(tokens) - 1)

    def process(self, tokens: list[int], stop: Callable[[], bool]) -> bool:
        """Evaluate `tokens` beyond the reusable prefix in chunks, checking `stop()` between chunks, so a
        cancel (or a waiting turn) does not sit behind a long prompt. False if stopped early."""
        llm = self.llm
        reuse = common_prefix(llm.input_ids[: llm.n_tokens], np.asarray(tokens, dtype=np.intc))
        if reuse < llm.n_tokens:
            llm._ctx.kv_cache_seq_rm(-1, reuse, -1)
            llm.n_tokens = reuse
            self.live_saved = False
        i = reuse
        while i < len(tokens):
            if stop():
                return False
            chunk = tokens[i : i + self.chunk_tokens()]
            t0 = time.perf_counter()
            self._decode_without_logits(chunk)
            self.live_saved = False
            rate = len(chunk) / max(time.perf_counter() - t0, 1e-6)
            self.prompt_rate = 0.5 * self.prompt_rate + 0.5 * rate
            i += len(chunk)
        return True

    def _decode_without_logits(self, chunk: list[int]) -> None:
        """Like `Llama.eval`, but asks llama.cpp for no logits: nothing samples from a prompt chunk, and
        the output layer (262,144 x 640 for the 270M) costs as much as ~1.7 tokens of the rest of the
        model per chunk (measured ~25% faster prompt processing in 20-token chunks)."""
        llm, n_past, n = self.llm, self.llm.n_tokens, len(chunk)
        llm._batch.set_batch(batch=chunk, n_past=n_past, logits_all=False)
        llm._batch.batch.logits[n - 1] = False
        llm._ctx.decode(llm._batch)
        llm.input_ids[n_past : n_past + n] = chunk
        llm.n_tokens += n
        llm._requires_eval = True  # no fresh logits: llama-cpp-python must decode before it samples

    def chunk_tokens(self) -> int:
        return max(CHUNK_MIN, min(CHUNK_MAX, self.llm.n_batch, int(self.prompt_rate * CHUNK_S)))

    def prewarm(self, key: object, tokens: list[int], stop: Callable[[], bool]) -> bool:
        """Process a prompt prefix (an NPC's persona, a conversation so far) now and save its state; False
        if `stop()` said so (what was processed is saved all the same)."""
        self.prepare(key, tokens)
        done = self.process(tokens, stop)
        self._save_live()
        return done

    # -- generation ---------------------------------------------------------------------------

    def generate(self, key: object, tokens: list[int], fmt: ChatFormat, sampling: Sampling,
                 cancel: threading.Event, emit: Callable[[str], None], text: str = "") -> Generation:
        """Generate one reply, calling `emit(text)` for each safe piece; stops at end of turn. (`text`, the
        rendered prompt, is for a remote engine: llama.cpp here takes the tokens.)"""
        out = Generation(prompt_tokens=len(tokens))
        t0 = time.perf_counter()
        out.cached_tokens = self.prepare(key, tokens)
        # The prompt but its last token, in chunks; llama-cpp-python's generate() then finds it cached.
        if not self.process(tokens[:-1], cancel.is_set):
            out.finish_reason, out.prompt_ms = "cancelled", (time.perf_counter() - t0) * 1000
            return out
        stops, scanner = self.stop_ids(fmt), StopScanner([fmt.end_of_turn, fmt.turn_open, fmt.bos])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        t_first = None
        self.live_saved = False  # generating decodes the prompt's last token and the reply
        gen = self.llm.generate(tokens, temp=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                                repeat_penalty=sampling.repeat_penalty, reset=True)
        try:
            for token in gen:
                now = time.perf_counter()
                if t_first is None:
                    t_first, out.prompt_ms = now, (now - t0) * 1000
                if cancel.is_set():
                    out.finish_reason = "cancelled"
                    break
                if token in stops or self.is_eog(token):
                    out.finish_reason = "stop"
                    break
                out.completion_tokens += 1
                text = scanner.feed(decoder.decode(self.llm._model.detokenize([token])))
                if text:
                    pieces.append(text)
                    out.first_piece_at = out.first_piece_at or time.perf_counter()
                    emit(text)
                if scanner.stopped:
                    out.finish_reason = "stop"
                    break
                if out.completion_tokens >= sampling.max_tokens:
                    out.finish_reason = "length"
                    break
        finally:
            gen.close()
        if out.finish_reason != "stop" or not scanner.stopped:
            tail = scanner.finish() + decoder.decode(b"", final=True)
            if tail and out.finish_reason != "cancelled":
                pieces.append(tail)
                emit(tail)
        out.gen_s = time.perf_counter() - (t_first or t0)
        out.text = "".join(pieces).strip()
        return out

    def close(self) -> None:
        self.states.clear()
        self.llm.close()
