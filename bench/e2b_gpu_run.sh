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
B=$(python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    import torch
    card = torch.cuda.get_device_properties(0).total_memory / 2**30
    variants = json.loads((out / "probe" / "step_probe.json").read_text())["variants"]
except Exception as e:  # no probe result: the safe batch
    (out / "choice.txt").write_text(f"batch 16: no probe result ({e})\n")
    print(16)
    raise SystemExit
fits = [v for v in variants if v["variant"].startswith("fused") and not v["variant"].endswith("+adamw")
        and not v.get("oom") and isinstance(v.get("largest_peak_gib"), (int, float))
        and v["largest_peak_gib"] < 0.92 * card]
best = max(fits, key=lambda v: v["tokens_per_s"], default=None)
batch = best["batch_size"] if best else 16
why = (f"batch {batch}: card {card:.1f} GiB; fitting fused variants "
       + "; ".join(f"{v['variant']} {v['tokens_per_s']} tokens/s, largest step {v['largest_peak_gib']} GiB" for v in fits)
       + ("" if best else "; none fits: 16"))
(out / "choice.txt").write_text(why + "\n")
print(batch)
PY
)
cat "$OUT/choice.txt"
python3 bench/build_e2b_gpu.py --out "$OUT/b" --budget "${BUDGET:-300}" --preset fast --batch-size "$B" \
  --set fuse=true --tokenizer "$TOK" 2>&1 | tail -40
