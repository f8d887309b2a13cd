"""The model behind `lorekit serve --engine URL`: a separate OpenAI-compatible inference engine.

`RemoteEngine` has the part of `engine.Engine`'s interface the worker uses (`tokenize`, `n_ctx`,
`generate`, `close`, and what `status` shows), so everything above it (personas, notes, sessions,
reloads, both transports) is the same. It sends the engine the exact text LoreKit trains on (the
chat format's rendering, through the raw `/v1/completions` endpoint, never the engine's own chat
template) with the format's stop strings, and relays the streamed text through the same stop scanner.
Token counts for the context budget come from the GGUF's vocabulary, loaded alone (no weights).

The engine adds the `<bos>` token itself when the model's tokenizer asks for one (llama.cpp, vLLM,
SGLang and llama-cpp-python all tokenize a text prompt with the model's special tokens), so the
text sent leaves out the leading `<bos>` of the rendering; the tokens the engine sees are the ones
counted here. Any number of threads may call `generate` at once: that is the point of an engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from lorekit.chat_formats import ChatFormat
from lorekit.errors import LorekitError
from lorekit.serve.config import ServeConfig
from lorekit.serve.engine import Generation, file_signature, gguf_family, hash_later
from lorekit.serve.engine_client import EngineClient, EngineError, parse_url
from lorekit.serve.request import Sampling
from lorekit.serve.scheduler import Cancel
from lorekit.serve.textstream import StopScanner

log = logging.getLogger(__name__)

PROBE_S = 2.0  # seconds between two checks of the engine's health


def check_settings(cfg: ServeConfig) -> None:
    """Settings that cannot go with an engine, all reported at once."""
    problems = []
    try:
        parse_url(cfg.engine)
    except LorekitError as e:
        problems.append(str(e))
    if cfg.retrain:
        problems.append("--retrain swaps a rebuilt model into this process, but with --engine the engine holds the "
                        "weights: drop --retrain, rebuild with `lorekit build` and restart the engine on the new model")
    if cfg.adapter:
        problems.append(f"[serve] adapter {cfg.adapter}: with --engine the engine applies adapters; load it there "
                        "and leave `adapter` empty")
    if cfg.engine_concurrency < 1:
        problems.append(f"[serve] engine_concurrency must be at least 1, got {cfg.engine_concurrency}")
    if cfg.engine_timeout <= 0 or cfg.engine_connect_timeout <= 0:
        problems.append("[serve] engine_timeout and engine_connect_timeout must be more than 0 seconds")
    if problems:
        raise LorekitError("; ".join(problems))


class Vocab:
    """The tokenizer of a GGUF (its vocabulary only: fast to load, no weights in memory)."""

    def __init__(self, path: Path, verbose: bool = False):
        try:
            import llama_cpp
            from llama_cpp import _internals
        except ImportError:
            raise LorekitError("llama-cpp-python is not installed (LoreKit counts prompt tokens with the GGUF's "
                               "vocabulary); run: pip install 'lorekit[serve]'") from None
        if not path.is_file():
            raise LorekitError(f"{path}: no such model file (with --engine, LoreKit reads the vocabulary of the "
                               "model the engine serves: run `lorekit build` or pass --model PATH)")
        if not verbose:
            from lorekit import llama_log

            llama_log.route()
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True  # the tokenizer and metadata; no weights
        try:  # the model object alone: `llama_cpp.Llama` would also create a context, which needs weights
            self.model = _internals.LlamaModel(path_model=str(path), params=params, verbose=verbose)
        except (ValueError, RuntimeError, OSError) as e:
            raise LorekitError(f"{path}: llama.cpp could not read its vocabulary ({e})") from None
        self.family = gguf_family(self.model.metadata())
        self.add_bos = bool(self.model.add_bos_token())
        self._lock = threading.Lock()  # one tokenizer call at a time (many worker threads share it)

    def tokenize(self, text: str) -> list[int]:
        with self._lock:
            return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def close(self) -> None:
        self.model.close()


class EngineHealth:
    """Whether the engine answers: checked every PROBE_S seconds in the background (`GET /health`:
    any answer below 500 means its HTTP server is up; never a request that waits for a generation),
    and by every turn. `/health` and `status` read it without waiting. The model id, when not set
    by `[serve] engine_model`, is read from `GET /v1/models` once the engine answers."""

    def __init__(self, client: EngineClient, model: str = ""):
        self.client, self.model = client, model
        self.reachable: bool | None = None
        self.error: str | None = None
        self.checked_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def probe(self) -> None:
        timeout = self.client.connect_timeout
        try:
            status, _ = self.client.get("/health", timeout)
            if status >= 500:
                raise EngineError("engine_unavailable", f"the engine at {self.client.endpoint.url} answered "
                                                        f"{status} on /health (still loading, or failing)")
        except EngineError as e:
            self.mark(False, str(e))
            return
        self.mark(True)
        if not self.model:  # some engines answer this only between generations: it says nothing of health
            try:
                self.model = (self.client.models(timeout) or [""])[0]
            except EngineError as e:
                log.debug("the engine's model list: %s", e)

    def mark(self, ok: bool, error: str | None = None) -> None:
        if ok != self.reachable:
            (log.info if ok else log.warning)("engine %s: %s", self.client.endpoint.url,
                                               "reachable" if ok else error)
        self.reachable, self.error, self.checked_at = ok, None if ok else error, time.time()

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(PROBE_S):
                self.probe()

        self._thread = threading.Thread(target=loop, name="lorekit-engine-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def report(self) -> dict[str, Any]:
        return {"url": self.client.endpoint.url, "reachable": bool(self.reachable), "model": self.model or None,
                "error": self.error, "checked_at": round(self.checked_at, 3)}


class RemoteEngine:
    def __init__(self, cfg: ServeConfig, model: Path):
        self.cfg, self.path, self.adapter = cfg, Path(model), None
        self.vocab = Vocab(self.path, cfg.verbose_llama)
        self.family = self.vocab.family
        self.n_ctx = cfg.n_ctx  # the engine must hold this much per request (docs/scale.md)
        self.client = EngineClient(cfg.engine, cfg.engine_api_key, cfg.engine_connect_timeout, cfg.engine_timeout)
        self.health = EngineHealth(self.client, cfg.engine_model)
        self.health.probe()  # once now, so the first /health already knows
        self.health.start()
        self.loaded_at = time.time()
        self.signature = file_signature(self.path)
        self.sha256: str | None = None
        self._markers: dict[str, int | None] = {}
        hash_later(self)

    def tokenize(self, text: str) -> list[int]:
        """Tokens of already-rendered chat text (it carries its own `<bos>`): what the engine will see."""
        return self.vocab.tokenize(text)

    def marker_id(self, marker: str) -> int | None:
        """The token of a chat-format marker (`<end_of_turn>`, `<start_of_turn>`), if it is one token."""
        if marker not in self._markers:  # asked twice a turn: tokenized once
            ids = self.tokenize(marker)
            self._markers[marker] = ids[0] if len(ids) == 1 else None
        return self._markers[marker]

    def body(self, text: str, fmt: ChatFormat, sampling: Sampling) -> dict[str, Any]:
        """The `/v1/completions` request: the rendered turn, the format's stop markers, the sampling.

        The markers go three ways, because engines render special tokens as no text at all (so a stop
        string never sees them): as stop strings, as `stop_token_ids` (vLLM, SGLang), and the next
        turn's opener as a banned token (`logit_bias`): llama.cpp engines stop only on end-of-generation
        tokens, which `<end_of_turn>` is and `<start_of_turn>` is not. In-process serving stops at a
        `<start_of_turn>` instead; a trained model ends its turn first, so the two agree."""
        prompt = text[len(fmt.bos):] if self.vocab.add_bos and text.startswith(fmt.bos) else text
        end, opener = self.marker_id(fmt.end_of_turn), self.marker_id(fmt.turn_open)
        body: dict[str, Any] = {
            "prompt": prompt, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
            "top_p": sampling.top_p, "top_k": sampling.top_k, "stop": [fmt.end_of_turn, fmt.turn_open],
            "stop_token_ids": [t for t in (end, opener) if t is not None],
            # llama.cpp's name, then vLLM's and SGLang's; an engine ignores the one it does not know
            "repeat_penalty": sampling.repeat_penalty, "repetition_penalty": sampling.repeat_penalty,
            "stream": True, "stream_options": {"include_usage": True},
        }
        if opener is not None:
            body["logit_bias"] = {str(opener): -100}
        if self.health.model:
            body["model"] = self.health.model
        if self.cfg.seed >= 0:
            body["seed"] = self.cfg.seed
        return body

    def generate(self, key: object, tokens: list[int], fmt: ChatFormat, sampling: Sampling, cancel: Cancel,
                 emit: Callable[[str], None], text: str = "") -> Generation:
        """Stream one reply from the engine, calling `emit(text)` for each safe piece. Raises
        `EngineError` when the engine is down, too slow, or answers with something else."""
        out = Generation(prompt_tokens=len(tokens))
        t0 = time.perf_counter()
        scanner, pieces = StopScanner([fmt.end_of_turn, fmt.turn_open, fmt.bos]), []
        finish = None
        try:
            with closing(self.client.stream("/v1/completions", self.body(text, fmt, sampling), cancel)) as events:
                for event in events:
                    finish = self._take(event, out, scanner, pieces, emit, t0) or finish
                    if scanner.stopped or cancel.is_set():
                        break
        except EngineError as e:
            if e.code == "engine_unavailable":  # /health says so at once, not at the next probe
                self.health.mark(False, str(e))
            raise
        self.health.mark(True)
        if cancel.is_set():
            out.finish_reason = "cancelled"
        elif scanner.stopped:
            out.finish_reason = "stop"
        elif finish is None:
            raise EngineError("engine_error", f"the engine at {self.client.endpoint.url} ended the stream without a "
                                              "finish_reason (was it interrupted by another request?)")
        else:
            out.finish_reason = "length" if finish == "length" else "stop"
            tail = scanner.finish()
            if tail:
                pieces.append(tail)
                emit(tail)
        out.gen_s = time.perf_counter() - (out.first_piece_at or t0)
        out.text = "".join(pieces).strip()
        return out

    @staticmethod
    def _take(event: dict, out: Generation, scanner: StopScanner, pieces: list[str],
              emit: Callable[[str], None], t0: float) -> str | None:
        """Fold one completion chunk into `out`; returns its finish_reason, if it has one."""
        usage = event.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            out.completion_tokens = usage["completion_tokens"]
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            out.cached_tokens = cached if isinstance(cached, int) else out.cached_tokens
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return None  # the usage-only chunk at the end
        choice = choices[0]
        piece = choice.get("text")
        if isinstance(piece, str) and piece:
            if not out.prompt_ms:
                out.prompt_ms = (time.perf_counter() - t0) * 1000
            if not isinstance(usage, dict):
                out.completion_tokens += 1  # one chunk a token, until the engine reports its count
            safe = scanner.feed(piece)
            if safe:
                pieces.append(safe)
                out.first_piece_at = out.first_piece_at or time.perf_counter()
                emit(safe)
        reason = choice.get("finish_reason")
        return reason if isinstance(reason, str) and reason else None

    def close(self) -> None:
        self.health.stop()
        self.vocab.close()
