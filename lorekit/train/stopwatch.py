"""Where a training run's start-up goes: seconds per named part, for run.json and the log.

A GPU build of the whole sample world spends ~25 s before its first step (bench/results/build_e2b_gpu.md);
`lorekit train` logs the parts once the model is ready, and run.json keeps them as `startup_s`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


class Stopwatch:
    def __init__(self):
        self.parts: dict[str, float] = {}

    @contextmanager
    def part(self, name: str):
        """Time the block; a name timed twice adds up."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t0

    def rounded(self) -> dict[str, float]:
        return {name: round(s, 2) for name, s in self.parts.items()}

    def summary(self) -> str:
        return ", ".join(f"{name} {s:.1f} s" for name, s in self.parts.items())


@contextmanager
def part(clock: Stopwatch | None, name: str):
    """`clock.part(name)`, or nothing when there is no clock (callers outside a timed run)."""
    if clock is None:
        yield
    else:
        with clock.part(name):
            yield
