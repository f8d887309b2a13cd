"""`lorekit export OUT`: the CLI edge of lorekit.export (arguments in, a short summary out)."""

from __future__ import annotations

import argparse
from pathlib import Path

FLAGS = ("type", "base_gguf", "from_hf", "npc", "verify", "verify_prompts", "adapter_gguf", "hf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", nargs="?", default="build", type=Path,
                        help="build folder holding adapter/ (default: build); files go to OUT/export/")
    parser.add_argument("--type", choices=["auto", "base", "f16", "q8_0"],
                        help="merged model type (default auto: untouched tensors as in the base, changed ones "
                        "in q8_0; base: all re-quantized to the base's type)")
    parser.add_argument("--base-gguf", dest="base_gguf", help="base model GGUF (default: the profile's own)")
    parser.add_argument("--from-hf", dest="from_hf", nargs="?", const="model", metavar="DIR",
                        help="write the base GGUF from a Hugging Face folder (no DIR: the trained model's folder)")
    parser.add_argument("--npc", help="NPC id whose persona becomes the Modelfile's SYSTEM")
    parser.add_argument("--no-verify", dest="verify", action="store_const", const=False,
                        help="skip reading back, llama.cpp loading and the logit comparison")
    parser.add_argument("--no-adapter", dest="adapter_gguf", action="store_const", const=False,
                        help="do not write adapter.gguf")
    parser.add_argument("--hf", action="store_const", const=True,
                        help="also write OUT/export/hf/: the merged model as a bf16 Hugging Face folder (vLLM, ...)")
    parser.add_argument("--prompts", dest="verify_prompts", type=int, help="prompts in the logit check (1-8)")
    parser.add_argument("--check", action="store_true",
                        help="only re-run the verification of OUT/export (export/hf/ too when it was written)")
    parser.add_argument("--lore", type=Path, help="lore folder whose lorekit.toml to read "
                        "(default: the one recorded in OUT/dataset/report.json)")


def command(args: argparse.Namespace) -> int:
    from lorekit import config
    from lorekit.export import check, run
    from lorekit.export.config import ExportConfig

    lore = args.lore or config.lore_dir_of(args.out)
    cfg = config.load(ExportConfig, "export", lore, {k: getattr(args, k) for k in FLAGS})
    result = check(args.out, cfg) if args.check else run(args.out, cfg)
    _summary(result)
    return 0


def _summary(result) -> None:
    report = result.report
    files = report.get("files", {})
    for name, info in files.items():
        print(f"  {name:<14} {info['bytes'] / 1e6:9.1f} MB")
    print(f"model.gguf type: {report.get('type_written')} ({report.get('quantization_method')}); "
          f"stop at {', '.join(report.get('stop', []))}")
    ver = report.get("verification")
    for note in (ver or {}).get("notes", []):
        print(f"note: {note}")
    if ver:
        for name, c in ver["comparisons"].items():
            mark = "ok" if c["passed"] else "FAILED"
            effect = "-" if c.get("effect") is None else f"{c['effect']:.3f}"
            print(f"  {name:<39} top-1 {c['top1']:.2f}  max |diff| {c['max_abs']:.4f}  rel {c['rel']:.4f}  "
                  f"LoRA effect {effect}  {mark}")
    _hf_summary(report.get("hf"))
    print(f"written to {result.export_dir}")


def _hf_summary(hf: dict | None) -> None:
    if not hf:
        return
    print(f"  {'hf/':<14} {hf['bytes'] / 1e6:9.1f} MB  bf16, {hf['shards']} shard(s), "
          f"{hf['merged_tensors']} merged tensors, stops at id {hf['end_of_turn_id']}")
    c = hf.get("check") or {}
    if c.get("changed_files"):
        print(f"  hf/ files changed since the export: {', '.join(c['changed_files'])}  FAILED")
    for name, g in (c.get("logits") or {}).get("comparisons", {}).items():
        mark = "ok" if g["passed"] else "FAILED"
        effect = "-" if g.get("effect") is None else f"{g['effect']:.3f}"
        print(f"  {name:<39} top-1 {g['top1']:.2f}  max |diff| {g['max_abs']:.4f}  rel {g['rel']:.4f}  "
              f"LoRA effect {effect}  {mark}")
    for part in ("chat_template", "end_of_turn"):
        if c.get(part, {}).get("passed") is False:
            print(f"  hf/ {part.replace('_', ' ')} check FAILED: {c[part]}")
