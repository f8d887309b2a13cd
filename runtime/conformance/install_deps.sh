#!/usr/bin/env bash
# Toolchains for the engine-client conformance tests (tests/test_clients_*.py). Idempotent: installs
# only what is missing, and runs `apt-get update` only when something is.
#   lua5.4 + lua-socket  the Lua client (LuaSocket 3, as LÖVE and many moddable games embed it)
#   luajit               the same Lua client on LÖVE's own interpreter (Lua 5.1 semantics)
#   mono-mcs + mono-runtime  compile and run the C# (Unity) client's console conformance program
#   gdtoolkit (PyPI)     gdparse/gdlint for the Godot 4 addon (no Godot 4 binary exists here)
set -euo pipefail

missing=()
command -v lua5.4 >/dev/null 2>&1 || missing+=(lua5.4)
command -v luajit >/dev/null 2>&1 || missing+=(luajit)
dpkg -s lua-socket >/dev/null 2>&1 || missing+=(lua-socket)
command -v mcs >/dev/null 2>&1 || missing+=(mono-mcs)
command -v mono >/dev/null 2>&1 || missing+=(mono-runtime)

if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: apt-get install ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! python3 -c "import gdtoolkit" >/dev/null 2>&1; then
  echo "install_deps: pip install gdtoolkit"
  python3 -m pip install -q "gdtoolkit>=4.2,<5"
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true  # put gdparse/gdlint on PATH under pyenv
fi

echo "install_deps: $(lua5.4 -v 2>&1 | head -1) | $(luajit -v 2>&1 | head -1) | $(mcs --version) | gdtoolkit $(python3 -c 'import importlib.metadata as m; print(m.version("gdtoolkit"))')"
