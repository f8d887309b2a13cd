#!/usr/bin/env bash
# Offline install of the vLLM 0.26.0 bundle (see README.txt beside the parts).
#   SITE=/tmp/vsite VLLM_CHECK=0 bash /tmp/vllm_wheels/install.sh
# Finds vllm.tar.xz.partNN next to this script (or one folder down: c01/, c02/), checks them,
# cats them in order and extracts the site into $SITE (default /tmp/vsite). No network.
# Idempotent: a finished install leaves $SITE/.vllm_bundle_ok with the bundle's hash; a rerun skips.
# VLLM_CHECK=1 (default) then runs: PYTHONPATH=$SITE python3 -c "import vllm, vllm.entrypoints.openai.api_server"
# bench/vllm_bundle.sh copies this file next to the parts it makes and rewrites the four lines BUNDLE_SHA=,
# PART_NAMES=, PART_SHAS= and PART_SIZES= for them; the values here are those of the current .vllm/ bundle.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SITE=${SITE:-/tmp/vsite}
PY=${PYTHON:-python3}
CHECK=${VLLM_CHECK:-1}
BUNDLE_SHA=10838bdd3d526ec5fe396c2cbaff2596c9acb9ff9b7c74a74d284e0376efcb9f
PART_NAMES=(vllm.tar.xz.part01 vllm.tar.xz.part02)
PART_SHAS=(fcb6765a8cc36ecf2b0c24659c715b460a2e5723126a1acc34298c9950275160 7f8acb950c9ce08c263425998714779b94c95a3d847a2e86fb280456c6c53179)
PART_SIZES=(45000000 42902304)

sha() {  # sha256 of a file, coreutils or python
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else "$PY" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"; fi
}

if [ -f "$SITE/.vllm_bundle_ok" ] && [ "$(cat "$SITE/.vllm_bundle_ok")" = "$BUNDLE_SHA" ] && [ -f "$SITE/vllm/__init__.py" ]; then
  echo "vllm bundle already installed in $SITE"
else
  PARTS=()
  for i in "${!PART_NAMES[@]}"; do
    n=${PART_NAMES[$i]}; found=""
    for cand in "$HERE/$n" "$HERE"/*/"$n" "$HERE"/../*/"$n"; do
      [ -f "$cand" ] || continue
      if [ "$(stat -c%s "$cand")" = "${PART_SIZES[$i]}" ] && [ "$(sha "$cand")" = "${PART_SHAS[$i]}" ]; then found=$cand; break; fi
      echo "warning: $cand has the wrong size or sha256, skipped" >&2
    done
    [ -n "$found" ] || { echo "error: part $n (${PART_SIZES[$i]} bytes, sha256 ${PART_SHAS[$i]}) not found next to $0" >&2; exit 1; }
    PARTS+=("$found")
  done
  echo "extracting ${#PARTS[@]} parts into $SITE"
  mkdir -p "$SITE"
  rm -f "$SITE/.vllm_bundle_ok"
  if command -v xz >/dev/null 2>&1 && command -v tar >/dev/null 2>&1; then
    cat "${PARTS[@]}" | xz -dc | tar -x -C "$SITE" --no-same-owner
  else  # no xz binary: python's lzma + tarfile
    cat "${PARTS[@]}" | "$PY" -c 'import sys,tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz") as t:
    t.extractall(sys.argv[1])' "$SITE"
  fi
  [ -f "$SITE/vllm/__init__.py" ] || { echo "error: extraction left no $SITE/vllm" >&2; exit 1; }
  echo "$BUNDLE_SHA" > "$SITE/.vllm_bundle_ok"
  echo "installed vllm bundle into $SITE"
fi

if [ "$CHECK" = "1" ]; then
  env PYTHONPATH="$SITE" VLLM_NO_USAGE_STATS=1 "$PY" -c "import vllm, vllm.entrypoints.openai.api_server; print('vllm', vllm.__version__, 'imports ok from', vllm.__file__)"
fi
