#!/usr/bin/env bash
# The whole sample world (`max_facts = 0`) on the embedded Gemma 3 270M, on one CUDA GPU, then the eval over the
# whole world against the H200 targets of issue 14. Run from the repository root on the GPU machine:
#
#     bash bench/world_270m_gpu.sh OUT [WORK]      # OUT gets the logs, report.json and the figures
#
# The GPU machine reaches no registry: the 270M GGUF comes in as /tmp/m270/part* (bench/README.md says how it is
# split), LoreKit's own dependencies as wheels in $WHEELS (default .whl/; the GPU image's transformers 5.17 is
# enough since lorekit/train/gguf_tokenizer.py). Every stage is timed from the command's start.
# BUILD_ARGS are added to `lorekit build` (e.g. --no-eval, to evaluate the adapter elsewhere and spare GPU time).
set -euo pipefail
OUT=${1:?usage: bash bench/world_270m_gpu.sh OUT [WORK]}
WORK=${2:-/tmp/world270}
mkdir -p "$OUT" "$WORK"
T0=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - T0 )) s" | tee -a "$OUT/stages.txt"; }

source bench/gpu_site.sh
python3 -c "import transformers, torch; print('transformers', transformers.__version__, 'torch', torch.__version__)" \
  | tee "$OUT/versions.txt"
stamp "set-up"

# the sample world with its quick-start limits removed, and a GPU recipe for a 270M: bf16 (no 4-bit, no
# checkpointing: the model is small), larger batches (gpu_site.sh's train_270m_recipe); export/hf/ too, for
# bench/engine_gpu.sh
rm -rf "$WORK/lore" "$WORK/build"
cp -r sample_lore "$WORK/lore"
{ printf '[compile]\nmax_facts = 0\neval_world_facts = 120\n\n'
  train_270m_recipe
  printf '\n[eval]\nlimit = %s\nmax_tokens = 64\n\n[export]\nhf = true\n' "${EVAL_LIMIT:-120}"
} > "$WORK/lore/lorekit.toml"
rc=0
python3 -m lorekit build "$WORK/lore" --out "$WORK/build" ${BUILD_ARGS:-} > "$OUT/build.log" 2>&1 || rc=$?
grep -v "it/s]" "$OUT/build.log" | tail -40
stamp "build done (exit $rc)"
# No llama-cpp-python on the GPU machine (it is built from source, for Python 3.12 there): EVAL_BACKEND=adapter
# evaluates the trained adapter with PyTorch on the GPU instead of the exported GGUF with llama.cpp
if [ -n "${EVAL_BACKEND:-}" ] && [ ! -f "$WORK/build/eval/report.json" ]; then
  python3 -m lorekit eval "$WORK/build" --backend "$EVAL_BACKEND" > "$OUT/eval.log" 2>&1 || tail -20 "$OUT/eval.log"
  stamp "eval done ($EVAL_BACKEND backend)"
fi
cp "$WORK/build/eval/report.json" "$OUT/" 2>/dev/null || true
cp "$WORK/build/train/run.json" "$OUT/" 2>/dev/null || true
python3 bench/eval_grounding.py "$WORK/build" --gpu --results "$OUT/eval_grounding.md" \
  --command "bash bench/world_270m_gpu.sh (lorekit build of sample_lore with max_facts = 0 on the H200)" || true
