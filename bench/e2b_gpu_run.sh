#!/usr/bin/env bash
# Issue 18's GPU call, in one command on the GPU machine (from the repository root):
#
#     bash bench/e2b_gpu_run.sh OUT TOKENIZER      # TOKENIZER: bench/build_e2b_gpu.py --pack-tokenizer's archive
#
# 1. bench/step_probe_gpu.py: the same optimizer steps of the E2B shape with `[train] fuse` off and on, with
#    torch's AdamW, and fused at the larger batches of $SIZES (default 48), each with one step on the epoch's
#    largest batch for its peak memory; all in one process, so the ratios hold.
# 2. The batch for the build: the fused variant with the most tokens/s whose largest step fits in 92 % of the
#    card (OUT/choice.txt says why), else 16.
# 3. bench/build_e2b_gpu.py: the real `lorekit build` of the whole sample world, preset fast, fuse on, at that
#    batch, cut at $BUDGET s (default 300); its build_e2b_gpu.md section is the figure against the 180 s target.
set -uo pipefail
OUT=${1:?usage: bash bench/e2b_gpu_run.sh OUT TOKENIZER}
TOK=${2:?usage: bash bench/e2b_gpu_run.sh OUT TOKENIZER}
mkdir -p "$OUT"
timeout "${PROBE_S:-240}" python3 bench/step_probe_gpu.py --out "$OUT/probe" --tokenizer "$TOK" \
  --batch-sizes "${SIZES:-48}" --steps 6 > "$OUT/probe.log" 2>&1 || echo "probe: exit $? (see probe.log)"
grep -v "it/s]" "$OUT/probe.log" | tail -12
B=$(python3 bench/step_probe_gpu.py --pick "$OUT/probe/step_probe.json" 2> "$OUT/choice.txt" | tail -1)
cat "$OUT/choice.txt"
python3 bench/build_e2b_gpu.py --out "$OUT/b" --budget "${BUDGET:-300}" --preset fast --batch-size "$B" \
  --set fuse=true --tokenizer "$TOK" 2>&1 | tail -40
