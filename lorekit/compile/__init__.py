"""The compile stage: lore folder -> validated graph -> OUT/dataset/{train,eval}.jsonl + report.json.

    from lorekit.compile import run, CompileConfig
    result = run(Path("sample_lore"), Path("build"), CompileConfig())

`run` validates first: with errors in the vault it raises `ValidationFailed` (listing every problem)
and writes nothing. The dataset folder is replaced atomically, so a failed compile leaves the
previous dataset in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorekit import atomic
from lorekit.compile.config import CompileConfig
from lorekit.errors import LorekitError
from lorekit.lore.problems import Problem

log = logging.getLogger(__name__)

__all__ = ["CompileConfig", "CompileResult", "ValidationFailed", "check", "run"]


class ValidationFailed(LorekitError):
    def __init__(self, lore_dir: Path, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"{lore_dir}: {len(errors)} error(s) in the lore; nothing was written "
                         f"(fix them, `lorekit validate {lore_dir}` lists them again)")


@dataclass
class CompileResult:
    out: Path
    train_path: Path
    eval_path: Path
    report_path: Path
    report: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    wall_s: float = 0.0
    rendered: int = 0  # facts whose rows were rendered (not taken from OUT/.cache)
    fast: bool = False  # True when an edit was patched into the previous dataset (see compile/fast.py)


def check(lore_dir: Path, cfg: CompileConfig | None = None) -> list[Problem]:
    """Every problem of a vault and its templates (what `lorekit validate` prints)."""
    from lorekit.compile.build import prepare

    cfg = cfg or load_config(lore_dir)
    return prepare(Path(lore_dir), cfg, None).problems


def load_config(lore_dir: Path, overrides: dict[str, Any] | None = None) -> CompileConfig:
    from lorekit import config

    return config.load(CompileConfig, "compile", Path(lore_dir), overrides)


def run(lore_dir: Path | str, out: Path | str, cfg: CompileConfig | None = None) -> CompileResult:
    from lorekit.compile import cache as cache_mod
    from lorekit.compile.build import prepare
    from lorekit.compile.report import make_report

    t0 = time.perf_counter()
    lore_dir, out = Path(lore_dir), Path(out)
    cfg = cfg or load_config(lore_dir)
    dataset = out / "dataset"
    # the fast patch path assumes every fact is taught, and that an edit changes only its page's rows
    # (retrieved notes are drawn from the whole world, so with notes it does not hold)
    if cfg.cache and not cfg.max_facts and not cfg.notes:
        from lorekit.compile.fast import try_fast

        try:
            fast = try_fast(lore_dir, out, cfg)
        except Exception as e:  # the fast path is an optimisation: never a reason to fail
            log.debug("incremental fast path failed (%s); compiling normally", e)
            fast = None
        if fast is not None:
            report, rendered = fast
            return CompileResult(out, dataset / "train.jsonl", dataset / "eval.jsonl", dataset / "report.json",
                                 report, [], time.perf_counter() - t0, rendered, True)
    store = cache_mod.Cache(out / ".cache") if cfg.cache else None
    built = prepare(lore_dir, cfg, store)
    if any(p.severity == "error" for p in built.problems):
        raise ValidationFailed(lore_dir, built.problems)
    order_t = _order(len(built.train), f"{cfg.seed}:shuffle:train")
    order_e = _order(len(built.eval), f"{cfg.seed}:shuffle:eval")
    train_lines, eval_lines = built.train_lines, built.eval_lines
    train_bytes = b"".join([train_lines[i] for i in order_t])
    eval_bytes = b"".join([eval_lines[i] for i in order_e])
    h = hashlib.sha256(train_bytes)  # train.jsonl then eval.jsonl, as bytes on disk
    h.update(eval_bytes)
    sha = h.hexdigest()
    report = make_report(lore_dir, cfg, built, sha, len(train_lines), len(eval_lines))
    files = {"train.jsonl": train_bytes, "eval.jsonl": eval_bytes,
             "report.json": (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8")}
    first = not dataset.exists()
    if store is not None:  # with a cache, the dataset before this one is kept and rewritten in place
        from lorekit.compile.fast import SPARE, into_spare, overwrite

        swap = into_spare(dataset, out / ".cache" / SPARE)
    else:
        swap, overwrite = atomic.replace_dir(dataset), _write
    with swap as tmp:
        for name, data in files.items():
            overwrite(tmp / name, data)
    if store is not None and first:  # a spare from the start: the first edit, too, rewrites it in place
        (out / ".cache" / SPARE).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            overwrite(out / ".cache" / SPARE / name, data)
    if store is not None:
        from lorekit.compile.fast import save_state

        store.save()
        save_state(out, lore_dir, cfg, built, built.digest, report, _inverse(order_t), _inverse(order_e),
                   store.new_stats, {"train.jsonl": [train_lines[i] for i in order_t],
                                     "eval.jsonl": [eval_lines[i] for i in order_e]})
    wall = time.perf_counter() - t0
    log.debug("compiled %d train and %d eval rows in %.2f s", len(train_lines), len(eval_lines), wall)
    return CompileResult(out, dataset / "train.jsonl", dataset / "eval.jsonl", dataset / "report.json", report,
                         built.problems, wall, built.rendered)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _order(n: int, seed: str) -> list[int]:
    """The seeded shuffle as a permutation (row k of the file is row order[k] of the build)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def _inverse(order: list[int]) -> list[int]:
    inv = [0] * len(order)
    for k, i in enumerate(order):
        inv[i] = k
    return inv
