#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs
# every test of the workspace (unit, store contract, HTTP integration, CLI, interop).
#
#   scripts/test.sh                  # everything
#   JOTGATE_SKIP_INTEROP=1 scripts/test.sh   # without python3/PyJWT (interop tests skip)
#   JOTGATE_SKIP_OIDC_PROVIDER=1 scripts/test.sh  # without node (the oidc-provider tests skip)
#   JOTGATE_SKIP_POSTGRES=1 scripts/test.sh       # without PostgreSQL (its tests skip)
#   JOTGATE_TEST_POSTGRES=postgres://… scripts/test.sh  # use a running server (admin URL)
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

# PostgreSQL: a throwaway cluster (Debian's packages), on a free port, stopped at exit.
if [ "${JOTGATE_SKIP_POSTGRES:-}" != 1 ] && [ -z "${JOTGATE_TEST_POSTGRES:-}" ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$pgbin" ]; then
    echo "test.sh: installing postgresql"
    need_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive need_root apt-get install -y -qq postgresql >/dev/null
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  pgdir=$(mktemp -d)
  # initdb refuses to run as root: the cluster then belongs to the postgres user.
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  [ "$(id -u)" = 0 ] && chown postgres "$pgdir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg "$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres >/dev/null
  as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $pgdir -c fsync=off -c max_connections=300" start >/dev/null
  trap 'as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$pgdir"' EXIT
  export JOTGATE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  echo "test.sh: PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on port $port"
fi

cargo test --workspace --locked "$@"
