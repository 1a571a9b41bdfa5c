#!/usr/bin/env bash
# The two things a developer does with sluice, on a fresh machine too: each first installs
# what is missing (and says what it installs), then runs.
#
#   ./dev.sh run [ARGS...]    build and run `sluice serve --dev` with the compiled-in defaults
#                             (ARGS replace `serve --dev`, e.g. `./dev.sh run check-config`)
#   ./dev.sh test [ARGS...]   install what the tests need, then `cargo nextest run --locked`
#                             (ARGS go to nextest, e.g. `./dev.sh test -E 'test(/pii/)'`)
#   ./dev.sh setup [run|test] only install what is missing
#
# What it may install: cmake and a C compiler (Debian packages; pingora's zlib-ng and SQLite are
# built from source), cargo-nextest (crates.io), the Python and Node packages the integration
# tests drive (tests/requirements.txt, tests/sdk/package-lock.json), redis-server (Debian)
# for the fleet tests and chromium (Debian) for the console's browser tests. Debian packages
# need root or sudo; without them it says what to install.
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'dev.sh: %s\n' "$*" >&2; }

apt_install() {
  local pkgs=("$@") sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      say "missing Debian packages: ${pkgs[*]}; install them as root: apt-get install ${pkgs[*]}"
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing: ${pkgs[*]}; this is not a Debian-like system, install them with your package manager"
    exit 1
  fi
  say "installing ${pkgs[*]} (apt-get)"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

setup_build() {
  local missing=()
  command -v cargo >/dev/null 2>&1 || { say "cargo is missing: install Rust from https://rustup.rs"; exit 1; }
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  command -v make >/dev/null 2>&1 || missing+=(make)
  if ((${#missing[@]})); then
    say "building pingora (zlib-ng) and SQLite needs: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
}

setup_test() {
  setup_build
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
  command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
  # The console's browser tests drive Debian's Chromium with Playwright (never a download).
  [ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)
  if ((${#missing[@]})); then
    say "the integration tests need: ${missing[*]}"
    apt_install "${missing[@]}"
  fi
  if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest (cargo install --locked)"
    cargo install --locked cargo-nextest
  fi
  if ! python3 tests/sdk/check_requirements.py tests/requirements.txt 2>/dev/null; then
    say "installing the Python packages in tests/requirements.txt (pip)"
    python3 -m pip install -q --disable-pip-version-check -r tests/requirements.txt 2>/dev/null ||
      python3 -m pip install -q --disable-pip-version-check --break-system-packages -r tests/requirements.txt
  fi
  # The MCP SDK 2.x beside 1.x: in a directory of its own, put first on PYTHONPATH by the
  # tests that use it.
  if [ ! -f tests/mcp/sdk2/.installed ] || [ tests/mcp/requirements-2.txt -nt tests/mcp/sdk2/.installed ]; then
    say "installing the MCP Python SDK 2.x in tests/mcp/sdk2 (pip --target)"
    rm -rf tests/mcp/sdk2
    python3 -m pip install -q --disable-pip-version-check --target tests/mcp/sdk2 -r tests/mcp/requirements-2.txt 2>/dev/null ||
      python3 -m pip install -q --disable-pip-version-check --break-system-packages --target tests/mcp/sdk2 -r tests/mcp/requirements-2.txt
    touch tests/mcp/sdk2/.installed
  fi
  if [ ! -d tests/sdk/node_modules ] || [ tests/sdk/package-lock.json -nt tests/sdk/node_modules ]; then
    say "installing the Node packages in tests/sdk/package-lock.json (npm ci)"
    npm ci --prefix tests/sdk --no-audit --no-fund --loglevel=error
    touch tests/sdk/node_modules
  fi
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  run)
    setup_build
    if [ $# -eq 0 ]; then set -- serve --dev; fi
    exec cargo run --release --locked -- "$@"
    ;;
  test)
    setup_test
    exec cargo nextest run --locked "$@"
    ;;
  setup)
    case "${1:-test}" in
      run) setup_build ;;
      test) setup_test ;;
      *) say "usage: ./dev.sh setup [run|test]"; exit 2 ;;
    esac
    ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
