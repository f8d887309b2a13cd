"""`lorekit build`: compile -> train -> export -> eval, incremental like make.

Each stage has a key (a hash of what its output depends on, see `keys.py`). The key of every stage
that ran is stored in `OUT/build.json`; a stage whose key is unchanged and whose outputs exist is
skipped. Export runs before eval because eval compares the merged GGUF with the base model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorekit import atomic
from lorekit.build import keys
from lorekit.build.config import STAGES, BuildConfig
from lorekit.compile.templates import DEFAULT_DIR
from lorekit.config import load as load_config
from lorekit.config import section_class, to_dict
from lorekit.errors import LorekitError
from lorekit.prompt import resolve_template_dir

log = logging.getLogger(__name__)
STAMP = "build.json"


@dataclass
class StageReport:
    name: str
    status: str  # "built" | "up to date" | "skipped"
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class BuildResult:
    out: Path
    stages: list[StageReport]

    @property
    def built(self) -> list[str]:
        return [s.name for s in self.stages if s.status == "built"]


@dataclass
class Stage:
    name: str
    outputs: tuple[str, ...]  # relative to OUT; all must exist for a skip
    key: Callable[[], str]
    run: Callable[[], Any]


def run(
    lore_dir: Path,
    cfg: BuildConfig,
    *,
    from_stage: str | None = None,
    to_stage: str | None = None,
    force: bool = False,
    overrides: dict[str, dict[str, Any]] | None = None,
    on_stage: Callable[[str, str], None] | None = None,
) -> BuildResult:
    """Run the stages in order, skipping those whose inputs are unchanged.

    `overrides` maps a section ("train", ...) to CLI overrides for that stage's config.
    `on_stage(name, event)` is called with "start", "skip" or "done" (for the CLI's progress lines).
    """
    lore_dir, out = Path(lore_dir).resolve(), Path(cfg.out).resolve()
    if not lore_dir.is_dir():
        raise LorekitError(f"{lore_dir}: no such folder; give the folder that holds your lore pages")
    wanted = _select(from_stage, to_stage, cfg.eval)
    stamps = _read_stamps(out)
    reports = []
    for stage in _stages(lore_dir, out, overrides or {}):
        if stage.name not in wanted["run"]:
            if stage.name in wanted["skip"]:
                reports.append(StageReport(stage.name, "skipped", detail="not requested"))
            continue
        forced = force or (from_stage is not None and STAGES.index(stage.name) >= STAGES.index(from_stage))
        key = _key(stage)
        fresh = stamps.get(stage.name, {}).get("key") == key and all((out / o).exists() for o in stage.outputs)
        if fresh and not forced:
            reports.append(StageReport(stage.name, "up to date", outputs=list(stage.outputs)))
            on_stage and on_stage(stage.name, "skip")
            continue
        on_stage and on_stage(stage.name, "start")
        started = time.perf_counter()
        stage.run()
        seconds = time.perf_counter() - started
        stamps[stage.name] = {"key": key, "seconds": round(seconds, 2), "finished": time.time()}
        _write_stamps(out, stamps)
        reports.append(StageReport(stage.name, "built", seconds, list(stage.outputs)))
        on_stage and on_stage(stage.name, "done")
    return BuildResult(out, reports)


def _key(stage: Stage) -> str:
    try:
        return stage.key()
    except FileNotFoundError as e:
        raise LorekitError(
            f"{e.filename}: missing input of the {stage.name} stage; run the stages before it (drop --from)"
        ) from None


def _select(from_stage: str | None, to_stage: str | None, with_eval: bool) -> dict[str, list[str]]:
    for name in (from_stage, to_stage):
        if name is not None and name not in STAGES:
            raise LorekitError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    last = STAGES.index(to_stage) if to_stage else len(STAGES) - 1
    selected = [s for s in STAGES[: last + 1] if with_eval or s != "eval" or to_stage == "eval"]
    return {"run": selected, "skip": [s for s in STAGES if s not in selected]}


def _stages(lore_dir: Path, out: Path, overrides: dict[str, dict[str, Any]]) -> list[Stage]:
    def cfg(section: str):
        return load_config(section_class(section), section, lore_dir, overrides.get(section))

    def do_compile():
        from lorekit import compile as stage

        return stage.run(lore_dir, out, cfg("compile"))

    def do_train():
        from lorekit import train as stage

        return stage.run(out, cfg("train"))

    def do_export():
        from lorekit import export as stage

        return stage.run(out, cfg("export"))

    def do_eval():
        from lorekit import evaluate as stage

        return stage.run(out, cfg("eval"))

    return [
        Stage("compile", ("dataset/train.jsonl", "dataset/eval.jsonl"),
              lambda: keys.compile_key(lore_dir, DEFAULT_DIR, to_dict(cfg("compile")),
                                       resolve_template_dir(lore_dir, cfg("compile").template_dir)), do_compile),
        Stage("train", ("adapter/adapter_model.safetensors",),
              lambda: keys.train_key(out / "dataset", to_dict(cfg("train"))), do_train),
        Stage("export", ("export/model.gguf",),
              lambda: keys.export_key(out / "adapter", to_dict(cfg("export"))), do_export),
        Stage("eval", ("eval/report.json",),
              lambda: keys.eval_key(out, to_dict(cfg("eval"))), do_eval),
    ]


def _read_stamps(out: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads((out / STAMP).read_text(encoding="utf-8")).get("stages", {})
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_stamps(out: Path, stamps: dict[str, dict[str, Any]]) -> None:
    atomic.write_text(out / STAMP, json.dumps({"stages": stamps}, indent=2, sort_keys=True) + "\n")
