#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs
# every test of the workspace (unit, store contract, HTTP integration, CLI, interop).
#
#   scripts/test.sh                  # everything
#   JOTGATE_SKIP_INTEROP=1 scripts/test.sh   # without python3/PyJWT (interop tests skip)
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The TLS and key-import tests make certificates and keys with the openssl CLI.
if ! command -v openssl >/dev/null; then
  echo "test.sh: installing openssl"
  need_root apt-get update -qq && need_root apt-get install -y -qq openssl >/dev/null
fi

# Interoperability tests verify jotgate's tokens with PyJWT (not our code).
if [ "${JOTGATE_SKIP_INTEROP:-}" != 1 ]; then
  if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
    echo "test.sh: installing pyjwt[crypto] from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check 'pyjwt[crypto]>=2.8'
  fi
fi

exec cargo test --workspace --locked "$@"
