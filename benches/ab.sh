#!/bin/bash
# Same-run comparison of two jotgate release binaries, /tmp/jotgate-old and /tmp/jotgate-new:
# GET /private (a cached token) and GET /healthz, two rounds. LOGLEVEL=warn drops the
# access log. Needs wrk, curl, jq.
set -u
for round in 1 2; do
for name in old new; do
  BIN=/tmp/jotgate-$name
  d=$(mktemp -d)
  JOTGATE_LOG=${LOGLEVEL:-info} JOTGATE_DATABASE=$d/db $BIN serve --listen 127.0.0.1:18090 --argon2-memory-kib 1024 --argon2-iterations 1 2>/dev/null &
  pid=$!
  for i in $(seq 50); do curl -s 127.0.0.1:18090/healthz >/dev/null && break; sleep 0.1; done
  T=$(curl -s 127.0.0.1:18090/signup -H 'content-type: application/json' -d '{"username":"bench","password":"correct horse battery"}' | jq -r .token)
  p=$(wrk -t1 -c32 -d8s -H "authorization: Bearer $T" http://127.0.0.1:18090/private | awk '/Requests\/sec/ {print $2}')
  h=$(wrk -t1 -c32 -d8s http://127.0.0.1:18090/healthz | awk '/Requests\/sec/ {print $2}')
  echo "round $round $name: /private $p req/s, /healthz $h req/s"
  kill $pid; wait $pid 2>/dev/null; rm -rf $d
done
done
