#!/usr/bin/env bash
# Pinned A/B of GET /private with one cached token, as issue 12 measures (server on CPU 0,
# `wrk -t1 -c32` on CPU 1), servers started one after the other from the same database and
# token, so runs minutes apart (this machine's bare axum varies 185-200 k) are not compared.
# Prints req/s and p99 per run; docs/benchmarks.md (run M) records results.
#
#   benches/pinned_ab.sh bare jot bare jot bare jot
#   benches/pinned_ab.sh jot /tmp/jotgate-old jot /tmp/jotgate-old   # a binary of another commit
#   D=8 benches/pinned_ab.sh jot jotwarn                              # jotwarn: no access log
#
# Labels: bare (benches/bare_axum.rs), jot (target/release/jotgate), jotwarn (the same with
# JOTGATE_LOG=warn), or the path of another jotgate binary. Needs wrk, curl, jq, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-6}
PORT=${PORT:-18331}
cargo build --release --locked -q -p jotgate
cargo build --release --locked -q -p jotgate-verify --example bare_axum
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
JOTGATE_DATABASE=$work/db target/release/jotgate serve --listen 127.0.0.1:$PORT 2>/dev/null & pid=$!
until curl -sf localhost:$PORT/healthz >/dev/null; do sleep 0.1; done
token=$(curl -sf localhost:$PORT/signup -H 'content-type: application/json' \
  -d '{"username":"bench","password":"correct horse battery"}' | jq -r .token)
kill $pid; wait $pid 2>/dev/null || true; pid=""
for label in "$@"; do
  case $label in
    bare) taskset -c 0 target/release/examples/bare_axum $PORT & pid=$! ;;
    jot) JOTGATE_DATABASE=$work/db taskset -c 0 target/release/jotgate serve --listen 127.0.0.1:$PORT 2>/dev/null & pid=$! ;;
    jotwarn) JOTGATE_LOG=warn JOTGATE_DATABASE=$work/db taskset -c 0 target/release/jotgate serve --listen 127.0.0.1:$PORT 2>/dev/null & pid=$! ;;
    *) JOTGATE_DATABASE=$work/db taskset -c 0 "$label" serve --listen 127.0.0.1:$PORT 2>/dev/null & pid=$! ;;
  esac
  until curl -s -o /dev/null localhost:$PORT/healthz; do sleep 0.1; done
  taskset -c 1 wrk --latency -t1 -c32 -d${D}s -H "Authorization: Bearer $token" \
    http://127.0.0.1:$PORT/private | awk -v l="$label" '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print l, r, "req/s, p99", p}'
  kill $pid; wait $pid 2>/dev/null || true; pid=""
done
