#!/usr/bin/env bash
# Issue 16's GPU figure: 64 players (3 turns, 32-token replies each) talking to one LoreKit runtime on the
# H200, once with llama.cpp in LoreKit's own process and once with `--engine` in front of vLLM, in one run
# of bench/engine_players.py. Run from the repository root on the GPU machine:
#
#     bash bench/engine_gpu.sh OUT [WORK]
#
# The model: WORK/build's export when bench/world_270m_gpu.sh made one (its model.gguf in process, its
# export/hf/ in vLLM), or with RANDOM270=ARCHIVE a random-weight model of the 270M's shape (bench/random_270m.py),
# else the embedded 270M itself (its GGUF in process; in vLLM the Hugging Face folder
# LoreKit converts it to for training), with the sample world's notes on in both cases.
# vLLM comes in as wheels (git-ignored .vllm/, parts c01 and c02 copied call by call into /tmp/vllm_wheels with
# its install.sh) and is installed into /tmp/vsite, apart from LoreKit's site. The in-process case runs the
# llama-cpp-python CPU wheel LoreKit installs (the GPU machine has no CUDA compiler to build a CUDA one).
set -euo pipefail
OUT=${1:?usage: bash bench/engine_gpu.sh OUT [WORK]}
WORK=${2:-/tmp/world270}
VSITE=${VSITE:-/tmp/vsite}
mkdir -p "$OUT" "$WORK"
T0=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - T0 )) s" | tee -a "$OUT/stages.txt"; }

[ -d "$VSITE/vllm" ] || (SITE=$VSITE VLLM_CHECK=0 bash /tmp/vllm_wheels/install.sh > "$OUT/vllm_install.log" 2>&1) &
source bench/gpu_site.sh
BUILD=$WORK/build
base_lore() {  # LORE: a fresh copy of sample_lore, whose quick start keeps notes on
  LORE=$WORK/lore-base
  rm -rf "$LORE" && cp -r sample_lore "$LORE"
  ! grep -q "^notes = false" "$LORE/lorekit.toml"
}
if [ -n "${RANDOM270:-}" ]; then  # RANDOM270=ARCHIVE: bench/random_270m.py's model of the 270M's shape, no weights carried
  R=$WORK/random
  [ -f "$R/model.gguf" ] || python3 bench/random_270m.py --from "$RANDOM270" "$R" > "$OUT/random.log" 2>&1
  MODEL=$R/model.gguf HF=$R/hf
  base_lore
elif [ -f "$BUILD/export/model.gguf" ]; then
  MODEL=$BUILD/export/model.gguf HF=$BUILD/export/hf LORE=$WORK/lore
  [ -f "$HF/config.json" ] || python3 -m lorekit export "$BUILD" --hf > "$OUT/export_hf.log" 2>&1
else
  MODEL=$GGUF
  base_lore
  HF=$(python3 -c "from lorekit.models import resolve; from lorekit.train.load import ensure_converted
print(ensure_converted(resolve('gemma3-270m')))" 2> "$OUT/convert.log" | tail -1)
fi
echo "model $MODEL; vLLM serves $HF; lore $LORE" | tee "$OUT/model.txt"
stamp "model ready"
wait  # the vLLM install
[ -d "$VSITE/vllm" ] || { tail -20 "$OUT/vllm_install.log"; exit 1; }
stamp "vllm installed"

# vLLM gets its own site first on the path; 64 sequences at once, 2,048 tokens each (LoreKit's n_ctx);
# eager (the same turns/s with CUDA graphs in this session's run: LoreKit, not the GPU, set the pace);
# no FlashInfer sampler (its package is not in the bundle)
ENGINE="env PYTHONPATH=$VSITE VLLM_NO_USAGE_STATS=1 VLLM_USE_FLASHINFER_SAMPLER=0 \
  python3 -m vllm.entrypoints.openai.api_server --model $HF --served-model-name lorekit --host 127.0.0.1 \
  --port {port} --dtype bfloat16 --gpu-memory-utilization 0.3 --max-model-len 2048 --max-num-seqs 64 \
  --enforce-eager ${VLLM_ARGS:-}"
# --direct: the same players straight to vLLM too (LoreKit renders, no LoreKit server), to split a slow tail
# (DIRECT= leaves those two cases out); WARMUP (default --warmup-wave): one untimed wave of concurrent first
# turns before each timed case (vLLM compiles kernels at its first use of a batch shape;
# bench/results/engine_players.md, 2026-12-06), WARMUP= leaves it out; PLAYER_ARGS adds other options
python3 bench/engine_players.py --players "${PLAYERS:-64}" --turns 3 --tokens 32 --threads 16 --player-procs 8 ${DIRECT---direct} ${WARMUP---warmup-wave} ${PLAYER_ARGS:-} \
  --lore "$LORE" --model "$MODEL" --engine-wait 400 --start-engine "$ENGINE" \
  2>&1 | tee "$OUT/players.log" | grep -v "^INFO\|it/s]" | tail -30 || echo "engine_players.py: exit non-zero (see players.log)"
stamp "players done"
cp bench/results/engine_players.md bench/results/engine_players.json "$OUT/"
