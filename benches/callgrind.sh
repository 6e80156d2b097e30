#!/usr/bin/env bash
# Instructions per request on the hot path, counted by callgrind (repeatable where wall
# time on a shared VM is not): a release build with line tables under
# `valgrind --tool=callgrind`, N keep-alive requests from `ab -k -c 8`, the count divided
# by N. docs/benchmarks.md (run H) records results.
#
#   benches/callgrind.sh                 # GET /private, one valid token (a cache hit)
#   BAD=1 N=3000 benches/callgrind.sh    # a bad signature: verified every time
#   JOTGATE_LOG=warn benches/callgrind.sh  # without the access line
#   BARE=1 benches/callgrind.sh          # bare axum answering the same request
#   KEEP=1 ...                           # keep the callgrind file (callgrind_annotate it)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
PORT=${PORT:-18290}
for tool in valgrind ab curl jq; do
  command -v $tool >/dev/null || { echo "needs $tool (apt-get install valgrind apache2-utils curl jq)" >&2; exit 1; }
done
export CARGO_PROFILE_PROFILING_INHERITS=release CARGO_PROFILE_PROFILING_STRIP=false \
  CARGO_PROFILE_PROFILING_DEBUG=line-tables-only
cargo build --profile profiling --locked -q -p jotgate --bin jotgate
cargo build --profile profiling --locked -q -p jotgate-verify --example bare_axum
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

# A token from a plain (not profiled) server on the same database.
JOTGATE_DATABASE=$work/db.sqlite target/profiling/jotgate serve --listen 127.0.0.1:$PORT 2>/dev/null & pid=$!
until curl -sf localhost:$PORT/healthz >/dev/null; do sleep 0.1; done
token=$(curl -sf localhost:$PORT/signup -H 'content-type: application/json' \
  -d '{"username":"bench","password":"correct horse battery"}' | jq -r .token)
kill $pid; wait $pid 2>/dev/null || true
if [ -n "${BAD:-}" ]; then
  last=${token: -1}; if [ "$last" = A ]; then token="${token%?}Q"; else token="${token%?}A"; fi
fi

if [ -n "${BARE:-}" ]; then
  server=(target/profiling/examples/bare_axum $PORT)
else
  # (the variable set here, not through env(1): valgrind would profile env, not its exec)
  export JOTGATE_DATABASE=$work/db.sqlite
  server=(target/profiling/jotgate serve --listen 127.0.0.1:$PORT)
fi
valgrind --tool=callgrind --callgrind-out-file="$work/out.%p" "${server[@]}" >/dev/null 2>"$work/err" & pid=$!
until curl -s -o /dev/null localhost:$PORT/private; do sleep 0.5; done
callgrind_control -z "$pid" >/dev/null 2>&1
ab -q -k -n "$N" -c 8 -H "Authorization: Bearer $token" "http://127.0.0.1:$PORT/private" \
  | grep -E 'Complete requests|Non-2xx' || true
callgrind_control -d "$pid" >/dev/null 2>&1
for _ in $(seq 50); do ls "$work"/out.*.1 >/dev/null 2>&1 && break; sleep 0.2; done
sleep 0.5
dump=$(ls "$work"/out.*.1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "instructions per request: $(( total / N )) ($total over $N requests)"
[ -z "${KEEP:-}" ] || echo "callgrind file: $dump"
