#!/usr/bin/env bash
# Issue 16's GPU figure: 64 players (3 turns, 32-token replies each) talking to one LoreKit runtime on the
# H200, once with llama.cpp in LoreKit's own process and once with `--engine` in front of vLLM, in one run
# of bench/engine_players.py. Run from the repository root on the GPU machine, after bench/world_270m_gpu.sh
# made the build (its export/model.gguf for the in-process case and its export/hf/ for vLLM):
#
#     bash bench/engine_gpu.sh OUT [WORK]          # WORK: bench/world_270m_gpu.sh's (default /tmp/world270)
#
# vLLM comes in as wheels (git-ignored .vllm/, chunks c01-c03 copied call by call into /tmp/vllm_wheels with
# its install.sh; bench/README.md says how) and is installed into /tmp/vsite, apart from LoreKit's site.
# The in-process case runs the llama-cpp-python CPU wheel LoreKit installs (the GPU machine has no CUDA
# compiler to build a CUDA one), with 16 threads.
set -euo pipefail
OUT=${1:?usage: bash bench/engine_gpu.sh OUT [WORK]}
WORK=${2:-/tmp/world270}
VSITE=${VSITE:-/tmp/vsite}
BUILD=$WORK/build
mkdir -p "$OUT"
T0=$(date +%s)
stamp() { echo "$1 $(( $(date +%s) - T0 )) s" | tee -a "$OUT/stages.txt"; }

[ -f "$BUILD/export/model.gguf" ] || { echo "engine_gpu.sh: $BUILD/export/model.gguf missing: run bench/world_270m_gpu.sh first" >&2; exit 2; }
if [ ! -d "$VSITE/vllm" ]; then
  SITE=$VSITE bash /tmp/vllm_wheels/install.sh > "$OUT/vllm_install.log" 2>&1 || { tail -20 "$OUT/vllm_install.log"; exit 1; }
fi
stamp "vllm installed"
export PYTHONPATH=/tmp/site2:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LOREKIT_HOME=$WORK/home
if [ ! -f "$BUILD/export/hf/config.json" ]; then
  python3 -m lorekit export "$BUILD" --hf > "$OUT/export_hf.log" 2>&1 || { tail -20 "$OUT/export_hf.log"; exit 1; }
fi
stamp "export/hf ready"

# vLLM gets its own site first on the path; 64 sequences at once, 2,048 tokens each (LoreKit's n_ctx), eager
# (CUDA-graph capture would add start-up; the figure is then a floor for vLLM)
ENGINE="env PYTHONPATH=$VSITE VLLM_NO_USAGE_STATS=1 python3 -m vllm.entrypoints.openai.api_server \
  --model $BUILD/export/hf --served-model-name lorekit --host 127.0.0.1 --port {port} --dtype bfloat16 \
  --gpu-memory-utilization 0.3 --max-model-len 2048 --max-num-seqs 64 --enforce-eager ${VLLM_ARGS:-}"
python3 bench/engine_players.py --players "${PLAYERS:-64}" --turns 3 --tokens 32 --threads 16 \
  --lore "$WORK/lore" --model "$BUILD/export/model.gguf" --engine-wait 400 --start-engine "$ENGINE" \
  2>&1 | tee "$OUT/players.log" | grep -v "^INFO\|it/s]" | tail -30 || echo "engine_players.py: exit non-zero (see players.log)"
stamp "players done"
cp bench/results/engine_players.md bench/results/engine_players.json "$OUT/"
