"""`[serve]` settings: the NPC dialogue server."""

from __future__ import annotations

from dataclasses import dataclass

from lorekit.config import opt

DEFAULT_PORT = 7861


@dataclass
class ServeConfig:
    host: str = opt("127.0.0.1", "address to listen on; anything but loopback requires `token`")
    port: int = opt(DEFAULT_PORT, "TCP port for both the game protocol and HTTP (0 picks a free one)")
    token: str = opt("", "shared secret clients must send (hello.token or `Authorization: Bearer`)")
    model: str = opt("", "GGUF to serve; empty: OUT/export/model.gguf, else the base model of the default profile")
    adapter: str = opt("", "LoRA adapter GGUF applied to `model`; empty: none (a merged model.gguf needs none)")
    family: str = opt("", "chat format (gemma3, gemma4); empty: OUT/export/export.json, else the GGUF's architecture")
    n_ctx: int = opt(4096, "context window in tokens; history is trimmed to fit it")
    n_batch: int = opt(512, "prompt tokens processed per llama.cpp batch")
    n_threads: int = opt(0, "CPU threads for llama.cpp; 0: half the cores (at least 1), leaving the rest to the game")
    n_threads_batch: int = opt(0, "CPU threads for prompt processing (personas after an edit, history); 0: n_threads")
    gpu_layers: int = opt(0, "layers offloaded to a GPU (-1: all) when llama.cpp was built with one")
    swa_full: bool = opt(True, "keep Gemma's full sliding-window cache so conversations and NPC switches reuse it")
    state_cache_mb: int = opt(512, "memory for saved per-NPC prompt states (switching NPCs without re-processing)")
    prewarm: bool = opt(True, "while idle, process every NPC's persona, and after a turn the conversation so far, so a "
                        "turn processes only its own lore notes and line")
    prewarm_lines: list[str] = opt(["Hello.", "Who are you?"], "player lines whose lore notes are processed for every NPC while "
                                   "idle, after the personas (~5 MB of state_cache_mb per line and NPC)")
    max_tokens: int = opt(200, "default reply length cap in tokens")
    # A grounded NPC says its notes and its own lines as written: a repeat penalty counts the prompt's last
    # tokens too and pushes it off them, and a high temperature invents (bench/results/served_sampling.md).
    temperature: float = opt(0.3, "default sampling temperature (0: greedy)")
    top_p: float = opt(0.95, "nucleus sampling")
    top_k: int = opt(40, "top-k sampling")
    repeat_penalty: float = opt(1.0, "penalty for repeating recent tokens, the prompt's included (1.0: none)")
    seed: int = opt(-1, "sampling seed; -1: random")
    history_max_turns: int = opt(200, "turns kept per (NPC, session) on disk; the prompt keeps what fits n_ctx")
    handshake_timeout: float = opt(10.0, "seconds a new connection has to send its first line")
    idle_timeout: float = opt(300.0, "seconds of silence (nothing in flight) before a connection is closed")
    read_timeout: float = opt(5.0, "seconds an HTTP request has to arrive in full once it started (else 408)")
    max_line: int = opt(65536, "longest request line in bytes")
    max_turns_per_client: int = opt(8, "turns one connection may have queued or streaming")
    watch: bool = opt(True, "reload lore and model files when they change")
    debounce: float = opt(0.25, "seconds of quiet before a lore edit that does not load is reported as an error (one that loads is used at once)")
    retrain: bool = opt(False, "after lore edits, run compile -> train -> export in the background and swap in the result")
    retrain_debounce: float = opt(10.0, "seconds of quiet after a lore edit before a retrain starts")
    verbose_llama: bool = opt(False, "print llama.cpp's own log")
    engine: str = opt("", "base URL of an OpenAI-compatible inference engine to generate with (llama-server, vLLM, SGLang, Ollama); empty: llama.cpp in this process")
    engine_model: str = opt("", "the `model` name to send the engine; empty: the first one its /v1/models lists")
    engine_api_key: str = opt("", "bearer token the engine wants (vLLM --api-key, llama-server --api-key); empty: none")
    engine_concurrency: int = opt(64, "turns sent to the engine at once (it batches them); more wait in the fair queue")
    engine_timeout: float = opt(60.0, "seconds without a token from the engine before a turn ends with `engine_timeout`")
    engine_connect_timeout: float = opt(3.0, "seconds to connect to the engine (and for its health checks) before it counts as unavailable")
