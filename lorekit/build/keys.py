"""Input keys: what each stage's output depends on, as a hash. Equal key and present outputs = skip.

The train key hashes the dataset *without* its system turns, so that editing an NPC's persona
(voice, style) with unchanged facts and answers does not retrain: the runtime renders the new
persona at serve time anyway. A greeting or an opener is part of the answers, so it retrains.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lorekit import __version__, dataset
from lorekit.hashing import file_sha256
from lorekit.lore.files import is_template, lore_kind


def _h(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def tree_key(root: Path, keep=lore_kind) -> str:
    """Hash of the names and contents of every file under root that `keep(relative path)` accepts
    (default: the lore files of `lorekit.lore.files`)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if keep(rel):
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def compile_key(lore_dir: Path, templates_dir: Path, cfg: object, template_dir: Path | None = None) -> str:
    """The lore files, the default templates and `[compile] template_dir` (wherever it lives), the config, and
    the versions of the compiler and the page parser (a new wording or parsing rule recompiles)."""
    from lorekit.compile.fast import VERSION
    from lorekit.lore.vault import PARSER_VERSION

    extra = tree_key(template_dir, is_template) if template_dir and template_dir.is_dir() else ""
    return _h("compile", __version__, VERSION, PARSER_VERSION, tree_key(lore_dir), tree_key(templates_dir, is_template), extra, cfg)


def dataset_facts_key(dataset_dir: Path) -> str:
    """Hash of train/eval rows with system turns removed (see module docstring)."""
    digest = hashlib.sha256()
    for name in ("train.jsonl", "eval.jsonl"):
        for line in (dataset_dir / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            kept = [m for m in dataset.messages(row) if m["role"] != "system"]
            digest.update(json.dumps(kept, sort_keys=True).encode() + b"\n")
    return digest.hexdigest()


def train_key(dataset_dir: Path, cfg: object) -> str:
    return _h("train", dataset_facts_key(dataset_dir), cfg)


def export_key(adapter_dir: Path, cfg: object) -> str:
    weights = sorted(Path(adapter_dir).glob("*.safetensors")) + sorted(Path(adapter_dir).glob("*.json"))
    return _h("export", [(p.name, file_sha256(p)) for p in weights], cfg)


def eval_key(out: Path, cfg: object) -> str:
    export_meta = json.loads((out / "export" / "export.json").read_text(encoding="utf-8"))
    model = out / "export" / "model.gguf"
    return _h("eval", export_meta.get("files", {}).get("model.gguf", {}).get("sha256") or file_sha256(model),
              file_sha256(out / "dataset" / "eval.jsonl"), cfg)
