#!/usr/bin/env bash
# HTTP benchmarks of the release binary on loopback: GET /private throughput and latency
# (wrk), start-up time to the first served request, peak RSS, binary size, login latency at
# the default argon2 parameters. Prints a Markdown table; docs/benchmarks.md records results.
#
#   benches/http.sh            # needs wrk (apt-get install wrk) and python3
#   DURATION=20 benches/http.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
PORT=${PORT:-18080}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

cargo build --release --locked -q
BIN=target/release/jotgate
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

# Start-up: process spawn to first 200 from /healthz, on an existing database (keys made).
JOTGATE_DATABASE=$work/db.sqlite $BIN serve --listen 127.0.0.1:$PORT 2>/dev/null & pid=$!
until curl -sf localhost:$PORT/healthz >/dev/null; do sleep 0.05; done
kill $pid; wait $pid 2>/dev/null || true
startup=$(python3 - "$BIN" "$work/db.sqlite" "$PORT" <<'PY'
import subprocess, sys, time, urllib.request, statistics
bin_, db, port = sys.argv[1:4]
samples = []
for _ in range(20):
    t0 = time.perf_counter()
    p = subprocess.Popen([bin_, "serve", "--listen", f"127.0.0.1:{port}", "--database", db],
                         stderr=subprocess.DEVNULL)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            break
        except Exception:
            time.sleep(0.0005)
    samples.append((time.perf_counter() - t0) * 1000)
    p.terminate(); p.wait()
print(f"{statistics.median(samples):.1f} ms median, {min(samples):.1f} ms min (20 starts)")
PY
)

# Throttling raised so the timing comparison below is not cut short by 429s.
JOTGATE_DATABASE=$work/db.sqlite $BIN serve --listen 127.0.0.1:$PORT \
  --login-user-failures 100000 --login-ip-failures 100000 2>/dev/null & pid=$!
until curl -sf localhost:$PORT/healthz >/dev/null; do sleep 0.05; done
token=$(curl -sf localhost:$PORT/signup -H 'content-type: application/json' \
  -d '{"username":"bench","password":"correct horse battery"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')

wrk_line() { # $1 = label, rest = wrk args
  local label=$1; shift
  local out; out=$(wrk --latency "$@")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "| $label | $rps | $p50 | $p99 |"
}

echo "| load | req/s | p50 | p99 |"
echo "|---|---|---|---|"
wrk_line "GET /private, valid RS256 token, repeated: a verified-token cache hit (wrk -t1 -c32)" -t1 -c32 -d${DURATION}s \
  -H "Authorization: Bearer $token" http://127.0.0.1:$PORT/private
# The last character changed (to another canonical one: an RS256 signature's last character
# is one of A, Q, g, w), so the signature fails: checked every time, refusals are not cached.
last=${token: -1}; if [ "$last" = A ]; then bad="${token%?}Q"; else bad="${token%?}A"; fi
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $bad" localhost:$PORT/private)" = 401 ] \
  || { echo "the invalid token is not refused" >&2; exit 1; }
wrk_line "GET /private, invalid token (last character changed): a signature check every time (wrk -t1 -c32)" -t1 -c32 -d${DURATION}s \
  -H "Authorization: Bearer $bad" http://127.0.0.1:$PORT/private
wrk_line "GET /healthz, no auth: the stack's ceiling (wrk -t1 -c32)" -t1 -c32 -d${DURATION}s \
  http://127.0.0.1:$PORT/healthz
cat > "$work/login.lua" <<'LUA'
wrk.method = "POST"
wrk.body   = '{"username":"bench","password":"correct horse battery"}'
wrk.headers["Content-Type"] = "application/json"
LUA
wrk_line "POST /login, one client (argon2id m=19MiB t=2)" -t1 -c1 -d${DURATION}s \
  -s "$work/login.lua" http://127.0.0.1:$PORT/login
wrk_line "POST /login, 8 clients" -t1 -c8 -d${DURATION}s -s "$work/login.lua" http://127.0.0.1:$PORT/login

# Unknown user vs wrong password: the same work, so the same time.
enum=$(python3 - "$PORT" <<'PY'
import json, sys, time, urllib.request, urllib.error, statistics
port = sys.argv[1]
def login(user, pw):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/login",
        data=json.dumps({"username": user, "password": pw}).encode(),
        headers={"content-type": "application/json"})
    t0 = time.perf_counter()
    try:
        urllib.request.urlopen(req).read()
    except urllib.error.HTTPError as e:
        e.read()
    return (time.perf_counter() - t0) * 1000
res = {"wrong password": [], "unknown user": []}
for i in range(40):
    res["wrong password"].append(login("bench", "not the password"))
    res["unknown user"].append(login(f"nobody-{i}", "not the password"))
print("; ".join(f"{k}: median {statistics.median(v):.1f} ms" for k, v in res.items()) + " (40 each, interleaved)")
PY
)

rss=$(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)
echo
echo "- failed login timing: $enum"
echo "- start-up, spawn to first /healthz 200: $startup"
echo "- peak RSS of the server after all the load above: $rss"
echo "- release binary size (profile release, stripped): $(stat -c %s $BIN | awk '{printf "%.1f MiB", $1/1048576}')"
echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), wrk and server on the same machine"
