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
    store = cache_mod.Cache(out / ".cache") if cfg.cache else None
    built = prepare(lore_dir, cfg, store)
    if any(p.severity == "error" for p in built.problems):
        raise ValidationFailed(lore_dir, built.problems)
    train_lines = _shuffled(built.train_lines, f"{cfg.seed}:shuffle:train")
    eval_lines = _shuffled(built.eval_lines, f"{cfg.seed}:shuffle:eval")
    train_bytes, eval_bytes = b"".join(train_lines), b"".join(eval_lines)
    sha = hashlib.sha256(train_bytes + b"\0" + eval_bytes).hexdigest()
    report = make_report(lore_dir, cfg, built, sha, len(train_lines), len(eval_lines))
    with atomic.replace_dir(out / "dataset") as tmp:
        (tmp / "train.jsonl").write_bytes(train_bytes)
        (tmp / "eval.jsonl").write_bytes(eval_bytes)
        (tmp / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if store is not None:
        store.save()
    dataset = out / "dataset"
    wall = time.perf_counter() - t0
    log.debug("compiled %d train and %d eval rows in %.2f s", len(train_lines), len(eval_lines), wall)
    return CompileResult(out, dataset / "train.jsonl", dataset / "eval.jsonl", dataset / "report.json", report,
                         built.problems, wall, built.rendered)


def _shuffled(lines: list[bytes], seed: str) -> list[bytes]:
    lines = list(lines)
    random.Random(seed).shuffle(lines)
    return lines
