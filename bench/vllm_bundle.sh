#!/usr/bin/env bash
# The offline vLLM 0.26.0 bundle for the GPU machine (CPython 3.12, x86_64, sm_90, the image's torch 2.11 cu130),
# rebuilt from the registry. Run from the repository root on a machine with network, ~2 GB of free disk in $TMPDIR:
#
#     bash bench/vllm_bundle.sh OUTDIR        # bench/gpu_kits.sh vllm runs it with OUTDIR=.vllm
#
# 1. Downloads the pinned wheels of PINS (no dependency resolution: the list is complete on top of what the GPU
#    image has: torch, triton, transformers, tokenizers, huggingface_hub, safetensors, numpy, jinja2, requests...).
# 2. Unzips them, one after the other, into one staging site laid out for PYTHONPATH (no pip install: no
#    INSTALLER files, no bytecode); ninja's binary goes to SITE/bin, every other *.data/ folder is dropped.
# 3. Prunes what a dense Gemma 3 model on an H100/H200 does not use (PRUNE below, with the reasons) and strips
#    debug info from the extension modules of STRIP (those without an auditwheel RPATH).
# 4. Packs the site as vllm.tar.xz (xz -9e, one thread; XZ_THREADS=N to change), splits it at 45,000,000 bytes
#    into OUTDIR/c01/vllm.tar.xz.part01, OUTDIR/c02/vllm.tar.xz.part02, ... (one carry call each), and writes
#    OUTDIR/install.sh (bench/vllm_install.sh with these parts' sizes and sha256; a copy also goes into c01/)
#    and OUTDIR/README.txt.
# WORK=DIR keeps the downloads and the staging site there (a rerun then downloads nothing); default: a temporary
# folder, removed at the end.
set -euo pipefail
OUT=${1:?usage: bash bench/vllm_bundle.sh OUTDIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
PART_BYTES=45000000

# Exact versions of the first bundle (its dist-info folders). llguidance 1.6.1 is older than vLLM's >=1.7 (the
# newest the registry had); xgrammar 0.2.7 is the newest that accepts apache-tvm-ffi 0.1.10 (vLLM's pin);
# openai stays on 2.x (3.x would also need httpx2, httpcore2, truststore). xgrammar and llguidance are needed
# even without structured output: vllm/v1/structured_output imports both backends at start-up.
PINS=(
  vllm==0.26.0
  aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 annotated_doc==0.0.7 annotated_types==0.8.0
  anyio==4.16.0 apache_tvm_ffi==0.1.10 astor==0.8.1 attrs==26.1.0 blake3==1.0.11 cachetools==8.0.2 cbor2==6.3.0
  certifi==2026.10.19.post1 cloudpickle==3.1.3 compressed_tensors==0.17.0 depyf==0.20.0 dill==0.4.1
  distro==1.9.0 dnspython==2.9.2 einops==0.8.2 email_validator==2.4.0 fastapi==0.136.3 frozenlist==1.8.0
  h11==0.16.0 httpcore==1.0.9 httptools==0.9.0 httpx==0.29.0 idna==3.21 ijson==3.6.0 interegular==0.3.3
  jiter==0.19.0 jmespath==1.1.0 jsonschema==4.26.0 jsonschema_specifications==2025.9.1 lark==1.2.2
  llguidance==1.6.1 lm_format_enforcer==0.11.3 loguru==0.7.3 mistral_common==1.13.1
  model_hosting_container_standards==0.1.16 msgspec==0.23.0 multidict==7.2.1 ninja==1.13.2 openai==2.54.0
  openai_harmony==0.0.8 outlines_core==0.2.14 partial_json_parser==0.2.1.1.post7 pillow==13.0.0
  prometheus_client==0.26.0 prometheus_fastapi_instrumentator==8.1.0 propcache==0.5.4 py_cpuinfo==9.0.0
  pybase64==1.5.1 pycountry==26.2.16 pydantic==2.14.4 pydantic_core==2.50.5 pydantic_extra_types==2.11.1
  python_dotenv==1.2.4 python_json_logger==4.2.0 python_multipart==0.0.34 pyzmq==27.3.0 referencing==0.37.0
  rpds_py==2026.9.1 setproctitle==1.3.8 six==1.17.0 sniffio==1.3.1 starlette==1.10.0 supervisor==4.3.0
  typing_extensions==4.16.0 typing_inspection==0.4.5 uvicorn==0.55.0 uvloop==0.23.0
  watchfiles==1.3.0 websockets==17.4 xgrammar==0.2.7 yarl==1.25.1
)

# Removed from the site, relative to it (each reason in short; .vllm/README.txt of the first bundle has more):
PRUNE=(
  vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so  # 305 MB FlashAttention 2: on sm_90 vLLM uses FA3 (kept)
  vllm/vllm_flash_attn/cute                 # FA4 CuTe-DSL sources, need nvidia-cutlass-dsl: FA4 reports unavailable
  vllm/_moe_C_stable_libtorch.abi3.so       # MoE-only ops, imported under suppress(ImportError); Gemma 3 is dense
  vllm/vllm-rs                              # Rust frontend, only with VLLM_USE_RUST_FRONTEND=1
  vllm/third_party/deep_gemm                # FP8/MoE DeepGEMM (optional: has_deep_gemm() -> False)
  vllm/third_party/fmha_sm100               # Blackwell-only kernels
  vllm/_flashmla_C.abi3.so                  # MLA (DeepSeek) only, imported in try/except
  vllm/_flashmla_extension_C.abi3.so
  mistral_common/data                       # 36 MB of Mistral tokenizer files
  pycountry/locales                         # translations of country names
  pycountry/tests
)
PRUNE_GLOBS=(PIL/_avif.*.so pillow.libs/libavif-*)  # Pillow's optional AVIF plugin
STRIP=(uvloop aiohttp httptools multidict propcache frozenlist pybase64 setproctitle websockets openai_harmony)

if [ -n "${WORK:-}" ]; then mkdir -p "$WORK"; W=$(cd "$WORK" && pwd)
else W=$(mktemp -d "${TMPDIR:-/tmp}/vllm_bundle.XXXXXX"); trap 'rm -rf "$W"' EXIT; fi
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)

echo "== download ${#PINS[@]} wheels into $W/wheels"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$W/wheels" "${PINS[@]}"

echo "== unpack into $W/site"
SITE=$W/site
rm -rf "$SITE"; mkdir -p "$SITE"
for pin in "${PINS[@]}"; do
  name=${pin%%==*}; ver=${pin#*==}
  whl=$(find "$W/wheels" -maxdepth 1 -iname "${name//-/_}-${ver}-*.whl" | sort | head -1)
  [ -n "$whl" ] || { echo "error: no wheel for $pin in $W/wheels" >&2; exit 1; }
  unzip -q -o "$whl" -d "$SITE"
done
mkdir -p "$SITE/bin"
mv "$SITE"/ninja-*.data/scripts/ninja "$SITE/bin/ninja"
rm -rf "$SITE"/*.data

echo "== prune and strip"
for p in "${PRUNE[@]}"; do
  [ -e "$SITE/$p" ] || echo "warning: $p is not in the site (vLLM's layout changed?)" >&2
  rm -rf "${SITE:?}/$p"
done
for g in "${PRUNE_GLOBS[@]}"; do
  # shellcheck disable=SC2086  # the glob is meant to expand
  rm -f "$SITE"/$g
done
for pkg in "${STRIP[@]}"; do
  find "$SITE/$pkg" -type f -name '*.so' -exec strip --strip-debug {} +
done
echo "site: $(du -sb "$SITE" | cut -f1) bytes in $(find "$SITE" | wc -l) files and folders"

echo "== pack (xz -9e, ${XZ_THREADS:-1} thread(s); several minutes)"
ARCH=$W/vllm.tar.xz
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$SITE" -cf - . | xz -9e -T"${XZ_THREADS:-1}" > "$ARCH"
rm -rf "$W/split"; mkdir -p "$W/split"
split -b "$PART_BYTES" -d -a 2 --numeric-suffixes=1 "$ARCH" "$W/split/vllm.tar.xz.part"

rm -rf "$OUT"/c[0-9][0-9] "$OUT/install.sh"
NAMES=() SHAS=() SIZES=()
for f in "$W"/split/vllm.tar.xz.part*; do
  n=$(basename "$f"); d=$OUT/c${n##*.part}
  mkdir -p "$d"; mv "$f" "$d/$n"
  NAMES+=("$n"); SHAS+=("$(sha256sum "$d/$n" | cut -d' ' -f1)"); SIZES+=("$(stat -c%s "$d/$n")")
done
BUNDLE_SHA=$(sha256sum "$ARCH" | cut -d' ' -f1)
sed -e "s/^BUNDLE_SHA=.*/BUNDLE_SHA=$BUNDLE_SHA/" -e "s/^PART_NAMES=(.*/PART_NAMES=(${NAMES[*]})/" \
    -e "s/^PART_SHAS=(.*/PART_SHAS=(${SHAS[*]})/" -e "s/^PART_SIZES=(.*/PART_SIZES=(${SIZES[*]})/" \
    "$HERE/vllm_install.sh" > "$OUT/install.sh"
chmod +x "$OUT/install.sh"
cp "$OUT/install.sh" "$OUT/c01/install.sh"
{
  echo "vLLM 0.26.0 offline bundle, made by bench/vllm_bundle.sh on $(date -u +%Y-%m-%d) (what is in it and why: that script)"
  echo "whole archive vllm.tar.xz: $(stat -c%s "$ARCH") bytes, sha256 $BUNDLE_SHA"
  for i in "${!NAMES[@]}"; do echo "c${NAMES[$i]##*.part}/${NAMES[$i]}  ${SIZES[$i]} bytes  sha256 ${SHAS[$i]}"; done
  echo "On the GPU machine: copy each cNN/* into /tmp/vllm_wheels/ (one carry call each), then"
  echo "  SITE=/tmp/vsite VLLM_CHECK=0 bash /tmp/vllm_wheels/install.sh     (bench/README.md)"
} > "$OUT/README.txt"
cat "$OUT/README.txt"
