#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs
# every test of the workspace (unit, store contract, HTTP integration, CLI, interop).
#
#   scripts/test.sh                  # everything
#   JOTGATE_SKIP_INTEROP=1 scripts/test.sh   # without python3/PyJWT (interop tests skip)
#   JOTGATE_SKIP_OIDC_PROVIDER=1 scripts/test.sh  # without node (the oidc-provider tests skip)
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

# The edge tests verify tokens of an independent OpenID Connect provider (panva's
# oidc-provider, from npm, run by node).
if [ "${JOTGATE_SKIP_OIDC_PROVIDER:-}" != 1 ]; then
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "test.sh: installing nodejs and npm"
    need_root apt-get update -qq && need_root apt-get install -y -qq nodejs npm >/dev/null
  fi
  op=crates/jotgate/tests/oidc-provider
  if [ ! -d $op/node_modules/oidc-provider ]; then
    echo "test.sh: installing oidc-provider from npm"
    (cd $op && npm ci --no-audit --no-fund --silent)
  fi
fi

exec cargo test --workspace --locked "$@"
