#!/usr/bin/env bash
# A notes-reading prior for the embedded Gemma 3 270M: the whole of bench/prior_world (a world that shares
# nothing with sample_lore) trained with lore notes on one CUDA GPU, the recipe of bench/world_270m_gpu.sh
# (bf16, batch 16, 3 epochs, lr 4e-4, LoRA r 16 / alpha 32: the CPU quick start's rank, so it can start
# from it). Run from the repository root on the GPU machine, after the 270M came in as /tmp/m270/part*:
#
#     bash bench/prior_gpu.sh OUT [WORK]     # OUT gets the adapter (safetensors + config), run.json, logs
#
# COPIES=N trains instead on N copies of the world whose proper names never repeat (bench/prior_worlds.py:
# every fact, notes on, dont_know_share 0.3), same recipe; EPOCHS=1 keeps 4 copies within a 10-minute call.
# RECAST=1 also gives every NPC of every copy other "I don't know" and refusal lines (bench/prior_lines.py), as
# the CPU continuation of the shipped prior had (bench/prior_cpu.py); the persona quotes the `dont_know` line.
set -euo pipefail
OUT=${1:?usage: bash bench/prior_gpu.sh OUT [WORK]}
WORK=${2:-/tmp/prior270}
mkdir -p "$OUT" "$WORK"
T0=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - T0 )) s" | tee -a "$OUT/stages.txt"; }
source bench/gpu_site.sh
if [ -n "${COPIES:-}" ]; then
  BUILD=$WORK/worlds  # the copies, their builds, and the merged dataset: a build folder whose lore is itself
  rm -rf "$BUILD"
  python3 bench/prior_worlds.py "$BUILD" --copies "$COPIES" --compile ${RECAST:+--recast} > "$OUT/compile.log" 2>&1 \
    || { tail -30 "$OUT/compile.log"; exit 1; }
  { echo; train_270m_recipe; } >> "$BUILD/lorekit.toml"
  cp "$BUILD/dataset/report.json" "$OUT/dataset_report.json"
else
  BUILD=$WORK/build
  rm -rf "$WORK/lore" "$WORK/build"
  cp -r bench/prior_world "$WORK/lore"
  { printf '[compile]\nmax_facts = 0\n\n'; train_270m_recipe; } > "$WORK/lore/lorekit.toml"
  python3 -m lorekit compile "$WORK/lore" --out "$WORK/build" > "$OUT/compile.log" 2>&1
fi
stamp "compiled"
python3 -m lorekit train "$BUILD" > "$OUT/train.log" 2>&1 || { tail -30 "$OUT/train.log"; exit 1; }
stamp "trained"
cp "$BUILD/adapter/adapter_model.safetensors" "$BUILD/adapter/adapter_config.json" \
   "$BUILD/train/run.json" "$OUT/"
grep -v "it/s]" "$OUT/train.log" | tail -8
ls -la "$OUT"
