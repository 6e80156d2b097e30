#!/usr/bin/env bash
# Edge benchmarks on loopback, printed as Markdown (docs/benchmarks.md records results):
#   - GET /orders through `jotgate gateway` (to a plain Node http upstream) with a valid
#     RS256 token, verified-token cache on and off, and with an invalid token;
#   - the same check in Express + express-jwt (the stack most tutorials use), installed from
#     npm into a temp dir, and the Node upstream alone (the ceiling of that hop);
#   - revocation propagation: logout on the server → first 401 from the gateway.
#
#   benches/gateway.sh         # needs wrk (apt-get install wrk), node + npm, python3
#   DURATION=20 benches/gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
for tool in wrk node npm python3 curl; do
  command -v $tool >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
cargo build --release --locked -q
BIN=$PWD/target/release/jotgate
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cp benches/node/package.json benches/node/package-lock.json benches/node/*.js "$work/"
(cd "$work" && npm ci --no-audit --no-fund --silent >/dev/null 2>&1)

FEED=bench-feed-token-0123456789abcdefghijkl
wait_port() { until curl -s -o /dev/null "http://127.0.0.1:$1/"; do sleep 0.05; done; }

# The issuer.
JOTGATE_FEED_TOKEN=$FEED JOTGATE_DATABASE=$work/db.sqlite $BIN serve --listen 127.0.0.1:18180 \
  --argon2-memory-kib 1024 --argon2-iterations 1 2>/dev/null & pids+=($!)
wait_port 18180
ISS=http://127.0.0.1:18180
signup() {
  curl -sf $ISS/signup -H 'content-type: application/json' \
    -d "{\"username\":\"$1\",\"password\":\"correct horse battery\"}" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])'
}
token=$(signup bench)
bad="${token%?????}AAAAA"

node "$work/upstream.js" 18181 >/dev/null & pids+=($!)
node "$work/express-jwt.js" 18182 $ISS >/dev/null & pids+=($!)
wait_port 18181; wait_port 18182

policy() { # $1 = cache size
  cat > "$work/policy-$1.toml" <<TOML
[verifier]
cache_size = $1
feed_wait = 25
[[issuer]]
issuer = "$ISS"
profile = "jotgate"
audiences = ["jotgate"]
revocation_feed = "$ISS/api/v1/revocations"
revocation_token_env = "FEED"
[[route]]
path = "/admin/*"
roles_any = ["admin"]
TOML
  echo "$work/policy-$1.toml"
}
FEED=$FEED $BIN gateway --listen 127.0.0.1:18183 --upstream http://127.0.0.1:18181 --policy "$(policy 10000)" 2>/dev/null & pids+=($!)
FEED=$FEED $BIN gateway --listen 127.0.0.1:18184 --upstream http://127.0.0.1:18181 --policy "$(policy 0)" 2>/dev/null & pids+=($!)
wait_port 18183; wait_port 18184

wrk_line() { # $1 = label, $2 = url, $3 = token
  local out rps p50 p99 codes
  out=$(wrk --latency -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $3" "$2")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  codes=$(grep -q "Non-2xx" <<<"$out" && echo "refused (4xx)" || echo "200")
  echo "| $1 | $rps | $p50 | $p99 | $codes |"
}
echo "| server (GET /orders, wrk -t1 -c$CONNS -d${DURATION}s) | req/s | p50 | p99 | answers |"
echo "|---|---|---|---|---|"
wrk_line "Node http upstream alone (no auth; the ceiling of the hop)" http://127.0.0.1:18181/orders "$token"
wrk_line "jotgate gateway → Node upstream, valid RS256, cache on" http://127.0.0.1:18183/orders "$token"
wrk_line "jotgate gateway → Node upstream, valid RS256, cache off" http://127.0.0.1:18184/orders "$token"
wrk_line "jotgate gateway, valid token, 403 by policy (verification only), cache on" http://127.0.0.1:18183/admin/x "$token"
wrk_line "jotgate gateway, valid token, 403 by policy (verification only), cache off" http://127.0.0.1:18184/admin/x "$token"
wrk_line "jotgate gateway, invalid signature (401, no upstream)" http://127.0.0.1:18183/orders "$bad"
wrk_line "Express + express-jwt, valid RS256" http://127.0.0.1:18182/orders "$token"
wrk_line "Express + express-jwt, invalid signature (401)" http://127.0.0.1:18182/orders "$bad"

echo
echo "Revocation propagation (POST /logout on the server → first 401 from the gateway):"
python3 - "$ISS" <<'PY'
import json, statistics, sys, time, urllib.request, urllib.error
iss = sys.argv[1]
def call(url, token=None, body=None):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
samples = []
for i in range(20):
    _, body = call(f"{iss}/signup", body={"username": f"prop{i}-{time.time_ns()}", "password": "correct horse battery"})
    token = json.loads(body)["token"]
    assert call("http://127.0.0.1:18183/orders", token)[0] == 200
    t0 = time.perf_counter()
    assert call(f"{iss}/logout", token, body={})[0] == 204
    while call("http://127.0.0.1:18183/orders", token)[0] != 401:
        time.sleep(0.0005)
    samples.append((time.perf_counter() - t0) * 1000)
samples.sort()
print(f"  median {statistics.median(samples):.1f} ms, max {samples[-1]:.1f} ms over {len(samples)} logouts")
PY
