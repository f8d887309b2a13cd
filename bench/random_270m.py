"""A random-weight model of the Gemma 3 270M's exact shape and tokenizer, as a Hugging Face folder and a Q4_K_M
GGUF, for serving benchmarks on a machine that has no copy of the 270M's weights.

    python bench/random_270m.py --pack ARCHIVE        # here, once: the 270M's config and tokenizer (~3 MB)
    python bench/random_270m.py --from ARCHIVE OUT    # on the GPU machine: OUT/hf/ and OUT/model.gguf

Throughput and latency of serving depend on the shape (layers, widths, vocabulary, context), the prompt tokens
and the reply lengths, not on what the weights say: bench/engine_gpu.sh serves this model in LoreKit's own
llama.cpp and through an engine with the same prompts and the same 32-token cap (a random model rarely ends
a reply before the cap; the real base 270M did not either in the 2026-12-03 run). The GGUF is written by
LoreKit's own converter (`lorekit.export.from_hf.convert`) and quantized by llama.cpp as the embedded model
is (Q4_K_M), so the in-process case runs the same kernels it runs on the real model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEEP = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def pack(archive: Path) -> None:
    """The converted 270M's config and tokenizer files (no weights) as a .tar.xz."""
    from lorekit.models import resolve
    from lorekit.train.load import ensure_converted

    source = Path(ensure_converted(resolve("gemma3-270m")))
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:xz") as tar:
        for name in KEEP:
            if (source / name).is_file():
                tar.add(source / name, arcname=f"gemma3-270m/{name}")
    print(f"{archive}: {archive.stat().st_size / 2**20:.1f} MiB from {source}")


def make(archive: Path, out: Path) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    t0 = time.time()
    hf = out / "hf"
    shutil.rmtree(hf, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        shutil.copytree(Path(tmp) / "gemma3-270m", hf)
    cfg = AutoConfig.from_pretrained(hf)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(hf)
    params = sum(p.numel() for p in model.parameters())
    del model  # save_pretrained wrote config.json with dtype bfloat16

    from lorekit.export.from_hf import convert
    from lorekit.export.merge import _llama_quantizer

    f16 = out / "model-f16.gguf"
    convert(hf, f16, "f16")
    gguf = out / "model.gguf"
    quantize = _llama_quantizer()
    if quantize is None:
        raise SystemExit("llama-cpp-python is needed to quantize the GGUF to Q4_K_M")
    quantize(f16, gguf, 15)  # LLAMA_FTYPE_MOSTLY_Q4_K_M, the embedded 270M's type
    f16.unlink()
    info = {"parameters": params, "hf": str(hf), "gguf": str(gguf), "gguf_mib": round(gguf.stat().st_size / 2**20, 1),
            "seconds": round(time.time() - t0, 1)}
    (out / "random_270m.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", type=Path, metavar="ARCHIVE", help="write the config and tokenizer archive and exit")
    ap.add_argument("--from", dest="source", type=Path, metavar="ARCHIVE", help="--pack's archive")
    ap.add_argument("out", type=Path, nargs="?")
    args = ap.parse_args(argv)
    if args.pack:
        pack(args.pack)
        return 0
    if not args.source or not args.out:
        ap.error("give --pack ARCHIVE, or --from ARCHIVE OUT")
    args.out.mkdir(parents=True, exist_ok=True)
    make(args.source, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
