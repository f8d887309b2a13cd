"""Counters and latency histograms, rendered in the Prometheus text format for `GET /metrics`."""

from __future__ import annotations

import threading
from collections import Counter

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.n += 1
        self.total += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1

    def lines(self, name: str) -> list[str]:
        out = [f"# TYPE {name} histogram"]
        out += [f'{name}_bucket{{le="{b}"}} {c}' for b, c in zip(BUCKETS, self.counts, strict=False)]
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.total:.6f}", f"{name}_count {self.n}"]
        return out


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.turns = Counter[str]()  # by finish reason
        self.tokens = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.errors = Counter[str]()  # by error code
        self.reloads = Counter[str]()  # by what ("lore", "model")
        self.turn_seconds = Histogram()
        self.first_token_seconds = Histogram()

    def turn_done(self, finish: str, prompt: int, cached: int, completion: int, total_s: float, first_s: float | None):
        with self._lock:
            self.turns[finish] += 1
            self.tokens += completion
            self.prompt_tokens += prompt
            self.cached_tokens += cached
            self.turn_seconds.observe(total_s)
            if first_s is not None:
                self.first_token_seconds.observe(first_s)

    def error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def reloaded(self, what: str) -> None:
        with self._lock:
            self.reloads[what] += 1

    def render(self, queue_depth: int, clients: int) -> str:
        with self._lock:
            out = ["# TYPE lorekit_turns_total counter"]
            out += [f'lorekit_turns_total{{finish_reason="{k}"}} {v}' for k, v in sorted(self.turns.items())]
            out += ["# TYPE lorekit_tokens_generated_total counter", f"lorekit_tokens_generated_total {self.tokens}"]
            out += ["# TYPE lorekit_prompt_tokens_total counter", f"lorekit_prompt_tokens_total {self.prompt_tokens}"]
            out += ["# TYPE lorekit_cached_prompt_tokens_total counter",
                    f"lorekit_cached_prompt_tokens_total {self.cached_tokens}"]
            out += ["# TYPE lorekit_errors_total counter"]
            out += [f'lorekit_errors_total{{code="{k}"}} {v}' for k, v in sorted(self.errors.items())]
            out += ["# TYPE lorekit_reloads_total counter"]
            out += [f'lorekit_reloads_total{{what="{k}"}} {v}' for k, v in sorted(self.reloads.items())]
            out += self.turn_seconds.lines("lorekit_turn_seconds")
            out += self.first_token_seconds.lines("lorekit_first_token_seconds")
            out += ["# TYPE lorekit_queue_depth gauge", f"lorekit_queue_depth {queue_depth}"]
            out += ["# TYPE lorekit_clients gauge", f"lorekit_clients {clients}"]
            return "\n".join(out) + "\n"
