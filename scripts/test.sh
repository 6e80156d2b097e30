#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs
# every test of the workspace (unit, store contract, HTTP integration, CLI, interop).
#
#   scripts/test.sh                  # everything
#   JOTGATE_SKIP_INTEROP=1 scripts/test.sh   # without python3/PyJWT (interop tests skip)
#   JOTGATE_SKIP_OIDC_PROVIDER=1 scripts/test.sh  # without node (the oidc-provider tests skip)
#   JOTGATE_SKIP_POSTGRES=1 scripts/test.sh       # without PostgreSQL (its tests skip)
#   JOTGATE_SKIP_POSTGRES_TLS=1 scripts/test.sh   # a server of your own without TLS
#   JOTGATE_TEST_POSTGRES=postgres://… scripts/test.sh  # use a running server (admin URL;
#                                                       # JOTGATE_TEST_POSTGRES_CA=its CA, for the TLS test)
#   JOTGATE_SKIP_DYNAMODB=1 scripts/test.sh       # without the DynamoDB emulator (its tests skip)
#   JOTGATE_TEST_DYNAMODB=http://… scripts/test.sh      # use a running DynamoDB-compatible endpoint
#   JOTGATE_SKIP_CFN_LINT=1 scripts/test.sh       # without cfn-lint (the template check skips)
#   JOTGATE_SKIP_SCHEMATHESIS=1 scripts/test.sh   # without schemathesis (the OpenAPI checks skip)
#   JOTGATE_SKIP_DOCTEST=1 scripts/test.sh        # without running the docs' examples
#   JOTGATE_SKIP_FUZZ=1 scripts/test.sh           # without the fuzzing smoke run
#   JOTGATE_FUZZ_SECONDS=60 scripts/test.sh       # a longer smoke run per fuzz target (30)
set -euo pipefail
cd "$(dirname "$0")/.."

# Servers started here are stopped at exit, whatever happens.
cleanups=()
cleanup() { for c in "${cleanups[@]}"; do eval "$c"; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

need_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The TLS and key-import tests make certificates and keys with the openssl CLI; the
# documentation's examples (scripts/doctest.py) use curl and jq.
for tool in openssl curl jq; do
  if ! command -v $tool >/dev/null; then
    echo "test.sh: installing $tool"
    need_root apt-get update -qq && need_root apt-get install -y -qq $tool >/dev/null
  fi
done

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

# The OpenAPI document is checked against a live server by schemathesis (PyPI).
if [ "${JOTGATE_SKIP_SCHEMATHESIS:-}" != 1 ]; then
  if ! python3 -c 'import schemathesis' 2>/dev/null; then
    echo "test.sh: installing schemathesis from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4.3,<5'
  fi
  echo "test.sh: $(python3 -m schemathesis.cli --version)"
fi

# The CORS test drives Debian's headless Chromium with npm's playwright-core.
if [ "${JOTGATE_SKIP_BROWSER:-}" != 1 ]; then
  if [ ! -x /usr/bin/chromium ] && [ -z "${JOTGATE_CHROMIUM:-}" ]; then
    echo "test.sh: installing chromium"
    need_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive need_root apt-get install -y -qq chromium >/dev/null
  fi
  bd=crates/jotgate/tests/browser
  if [ ! -d $bd/node_modules/playwright-core ]; then
    echo "test.sh: installing playwright-core from npm"
    (cd $bd && npm ci --no-audit --no-fund --silent)
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
  port=$(free_port)
  as_pg "$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres >/dev/null
  # Two roles for the start-up error tests, ahead of the trust lines: one that needs its
  # password, one that may only connect over TLS.
  sed -i '1i host all jotgate_needs_password 127.0.0.1/32 scram-sha-256\nhostnossl all jotgate_needs_tls 127.0.0.1/32 reject' "$pgdir/data/pg_hba.conf"
  # TLS with a throwaway CA, so the tests can connect with sslmode=verify-full.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=jotgate-test-ca -keyout "$pgdir/ca.key" -out "$pgdir/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$pgdir/server.key" -out "$pgdir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$pgdir/san.ext"
  openssl x509 -req -in "$pgdir/server.csr" -CA "$pgdir/ca.crt" -CAkey "$pgdir/ca.key" \
    -CAcreateserial -days 2 -extfile "$pgdir/san.ext" -out "$pgdir/server.crt" 2>/dev/null
  chmod 600 "$pgdir/server.key"
  [ "$(id -u)" = 0 ] && chown postgres "$pgdir/server.key" "$pgdir/server.crt"
  as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $pgdir -c fsync=off -c max_connections=300 -c ssl=on -c ssl_cert_file=$pgdir/server.crt -c ssl_key_file=$pgdir/server.key" start >/dev/null
  export JOTGATE_TEST_POSTGRES_CA="$pgdir/ca.crt"
  cleanups+=('as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$pgdir"')
  export JOTGATE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  as_pg "$pgbin/psql" -h 127.0.0.1 -p "$port" -U postgres -q -c "CREATE ROLE jotgate_needs_password LOGIN PASSWORD 'right-password'" -c "CREATE ROLE jotgate_needs_tls LOGIN" postgres
  export JOTGATE_TEST_POSTGRES_ROLES=1
  echo "test.sh: PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on port $port"
fi

# DynamoDB: moto in server mode (PyPI), a real DynamoDB-compatible HTTP server with
# conditional writes, transactions and TTL; each test makes a table of its own.
if [ "${JOTGATE_SKIP_DYNAMODB:-}" != 1 ] && [ -z "${JOTGATE_TEST_DYNAMODB:-}" ]; then
  if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    echo "test.sh: installing moto[server] from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5'
  fi
  # The template's table as CloudFormation would create it, against botocore's model.
  python3 scripts/moto_server.py --check-template deploy/aws/template.yaml
  mport=$(free_port)
  # scripts/moto_server.py: moto with DynamoDB writes serialised, as DynamoDB does; every
  # request validated against botocore's service model and authorised against the IAM
  # policy of deploy/aws/template.yaml's API function, as AWS would.
  JOTGATE_IAM_TEMPLATE=deploy/aws/template.yaml \
    python3 scripts/moto_server.py -H 127.0.0.1 -p "$mport" >"${TMPDIR:-/tmp}/jotgate-moto-$mport.log" 2>&1 &
  moto_pid=$!
  cleanups+=("kill $moto_pid 2>/dev/null")
  for _ in $(seq 100); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$mport/moto-api/')" 2>/dev/null && break
    sleep 0.1
  done
  export JOTGATE_TEST_DYNAMODB="http://127.0.0.1:$mport"
  echo "test.sh: moto $(python3 -c 'import moto; print(moto.__version__)') (DynamoDB emulator, IAM of deploy/aws/template.yaml) on port $mport"
fi
# The SDK reads credentials from the environment; an emulator takes any.
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"

# The AWS deployment template is linted with cfn-lint (PyPI): it cannot be deployed here.
if [ "${JOTGATE_SKIP_CFN_LINT:-}" != 1 ]; then
  if ! command -v cfn-lint >/dev/null; then
    echo "test.sh: installing cfn-lint from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check 'cfn-lint>=1'
  fi
  cfn-lint deploy/aws/template.yaml deploy/aws/rest-api.yaml
  echo "test.sh: cfn-lint: deploy/aws/template.yaml and rest-api.yaml are valid"
fi

cargo test --workspace --locked --features jotgate/dynamodb,jotgate/aws-secrets "$@"

# The documentation's command blocks (```sh doctest), run as written against the binary
# the tests just built: a documented command, default or output that changes fails here.
if [ "${JOTGATE_SKIP_DOCTEST:-}" != 1 ]; then
  python3 scripts/doctest.py target/debug README.md docs/*.md
fi

# A short fuzzing run of every target (fuzz/run.sh: cargo-fuzz, installed when missing;
# the nightly toolchain), from the committed corpus: a crash fails the suite.
if [ "${JOTGATE_SKIP_FUZZ:-}" != 1 ]; then
  fuzz/run.sh "${JOTGATE_FUZZ_SECONDS:-30}"
fi
