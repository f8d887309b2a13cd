"""Typed configuration: one dataclass per stage, one `lorekit.toml` next to the lore.

Precedence, lowest first: dataclass defaults < `lorekit.toml` table < `LOREKIT_<SECTION>_<FIELD>`
environment variables < CLI flags. Unknown tables and keys are errors naming the key and the file.

A stage declares its config as a dataclass whose fields are made with `opt(default, "help")`, and
registers it in `SECTIONS` below (as an import string, so reading config never imports torch).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from lorekit.errors import LorekitError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "lorekit.toml"

# table name -> "module:Class". Each stage owns its own dataclass.
SECTIONS: dict[str, str] = {
    "compile": "lorekit.compile.config:CompileConfig",
    "train": "lorekit.train.config:TrainConfig",
    "export": "lorekit.export.config:ExportConfig",
    "serve": "lorekit.serve.config:ServeConfig",
    "eval": "lorekit.evaluate.config:EvalConfig",
    "build": "lorekit.build.config:BuildConfig",
}

T = TypeVar("T")


def opt(default: Any, help: str) -> Any:
    """A config field with a default and a one-line help text."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def config_path(lore_dir: Path | None) -> Path | None:
    if lore_dir is None:
        return None
    path = Path(lore_dir) / CONFIG_NAME
    return path if path.is_file() else None


def lore_dir_of(out: Path) -> Path | None:
    """The lore folder a build folder was compiled from (recorded in OUT/dataset/report.json), so
    that train, export and eval find the same lorekit.toml; None before the first compile."""
    report = Path(out) / "dataset" / "report.json"
    if report.is_file():
        import json

        lore = json.loads(report.read_text(encoding="utf-8")).get("lore_dir")
        return Path(lore) if lore else None
    return None


def read_file(path: Path | None) -> dict[str, Any]:
    """Read and check the top level of a `lorekit.toml`; {} when there is none."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise LorekitError(f"{path}: not UTF-8 text ({e.reason}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise LorekitError(f"{path}: invalid TOML: {e}") from None
    for key, value in data.items():
        if key not in SECTIONS:
            raise LorekitError(
                f"{path}: unknown table [{key}] (known: {', '.join(sorted(SECTIONS))}); remove or rename it"
            )
        if not isinstance(value, dict):
            raise LorekitError(f"{path}: `{key}` must be a table, written [{key}]")
    return data


def section_class(section: str) -> type:
    module, _, name = SECTIONS[section].partition(":")
    return getattr(importlib.import_module(module), name)


def load(
    cls: type[T],
    section: str,
    lore_dir: Path | None = None,
    overrides: dict[str, Any] | None = None,
    env: typing.Mapping[str, str] | None = None,
) -> T:
    """Resolve a stage config: defaults < lorekit.toml < LOREKIT_* env < overrides (None = not given)."""
    path = config_path(lore_dir)
    table = read_file(path).get(section, {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in names:
            raise LorekitError(
                f"{path}: unknown key `{key}` in [{section}] (known: {', '.join(sorted(names))}); remove or rename it"
            )
        values[key] = coerce(raw, hints[key], f"{path}: [{section}] {key}")
    env = os.environ if env is None else env
    for name in names:
        var = f"LOREKIT_{section.upper()}_{name.upper()}"
        if var in env:
            values[name] = coerce(env[var], hints[name], f"environment variable {var}")
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in names:
            raise LorekitError(f"unknown [{section}] option `{name}`")
        values[name] = coerce(value, hints[name], f"option --{name.replace('_', '-')}")
    return cls(**values)


def coerce(value: Any, hint: Any, what: str) -> Any:
    """Check `value` against a field's type, converting strings from the environment or the CLI."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], what)
    if origin is Literal:
        if value not in args:
            raise LorekitError(f"{what}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise LorekitError(f"{what}: expected a list, got {value!r}")
        return [coerce(v, args[0] if args else str, what) for v in value]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise LorekitError(f"{what}: expected a table, got {value!r}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise LorekitError(f"{what}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise LorekitError(f"{what}: expected a number, got {value!r}")
        try:
            number = hint(value)
        except (TypeError, ValueError):
            raise LorekitError(f"{what}: expected {'an integer' if hint is int else 'a number'}, got {value!r}") from None
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise LorekitError(f"{what}: expected an integer, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, (str, Path)):
            raise LorekitError(f"{what}: expected text, got {value!r}")
        return str(value)
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
