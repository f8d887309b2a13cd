#!/usr/bin/env bash
# A notes-reading prior for the embedded Gemma 3 270M: the whole of bench/prior_world (a world that shares
# nothing with sample_lore) trained with lore notes on one CUDA GPU, the recipe of bench/world_270m_gpu.sh
# (bf16, batch 16, 3 epochs, lr 4e-4, LoRA r 16 / alpha 32: the CPU quick start's rank, so it can start
# from it). Run from the repository root on the GPU machine, after the 270M came in as .m270/part*:
#
#     bash bench/prior_gpu.sh OUT [WORK]     # OUT gets the adapter (safetensors + config), run.json, logs
set -euo pipefail
OUT=${1:?usage: bash bench/prior_gpu.sh OUT [WORK]}
WORK=${2:-/tmp/prior270}
mkdir -p "$OUT" "$WORK"
T0=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - T0 )) s" | tee -a "$OUT/stages.txt"; }
source bench/gpu_site.sh
rm -rf "$WORK/lore" "$WORK/build"
cp -r bench/prior_world "$WORK/lore"
{ printf '[compile]\nmax_facts = 0\n\n'; train_270m_recipe; } > "$WORK/lore/lorekit.toml"
python3 -m lorekit compile "$WORK/lore" --out "$WORK/build" > "$OUT/compile.log" 2>&1
stamp "compiled"
python3 -m lorekit train "$WORK/build" > "$OUT/train.log" 2>&1 || { tail -30 "$OUT/train.log"; exit 1; }
stamp "trained"
cp "$WORK/build/adapter/adapter_model.safetensors" "$WORK/build/adapter/adapter_config.json" \
   "$WORK/build/train/run.json" "$OUT/"
grep -v "it/s]" "$OUT/train.log" | tail -8
ls -la "$OUT"
