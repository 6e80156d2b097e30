#!/usr/bin/env bash
# HTTP benchmarks of the release binary on loopback: GET /private throughput and latency
# (wrk) beside two comparison servers run in the same session (benches/bare_axum.rs: axum
# verifying nothing; benches/bare_jwt.rs: axum + jsonwebtoken RS256, no cache), start-up
# time to the first served request, peak RSS, binary size, login latency at
# the default argon2 parameters. Prints a Markdown table; docs/benchmarks.md records results.
#
#   benches/http.sh            # needs wrk (apt-get install wrk) and python3
#   DURATION=20 benches/http.sh
#   PIN=1 benches/http.sh      # servers on CPU 0, wrk on CPU 1 (taskset): the issue's setup
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
PORT=${PORT:-18080}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
SRV="" LOAD=""
if [ "${PIN:-}" = 1 ]; then SRV="taskset -c 0" LOAD="taskset -c 1"; fi

cargo build --release --locked -q
cargo build --release --locked -q -p jotgate-verify --example bare_axum --example bare_jwt
BIN=target/release/jotgate
work=$(mktemp -d)
trap 'kill $pid ${bare_pids:-} 2>/dev/null || true; rm -rf "$work"' EXIT

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
# (and sessions, so 500 logins of one user keep 500 live tokens)
JOTGATE_DATABASE=$work/db.sqlite $SRV $BIN serve --listen 127.0.0.1:$PORT \
  --login-user-failures 100000 --login-ip-failures 100000 --max-sessions 1000 2>/dev/null & pid=$!
until curl -sf localhost:$PORT/healthz >/dev/null; do sleep 0.05; done
token=$(curl -sf localhost:$PORT/signup -H 'content-type: application/json' \
  -d '{"username":"bench","password":"correct horse battery"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')

wrk_line() { # $1 = label, rest = wrk args
  local label=$1; shift
  local out; out=$($LOAD wrk --latency "$@")
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

# The comparison servers, same machine, same wrk settings, the same token.
jwk=$(curl -sf localhost:$PORT/.well-known/jwks.json | python3 -c 'import json,sys; k=json.load(sys.stdin)["keys"][0]; print(k["n"], k["e"])')
$SRV target/release/examples/bare_axum $((PORT + 1)) & bare_pids="$!"
$SRV target/release/examples/bare_jwt $((PORT + 2)) "http://127.0.0.1:$PORT" $jwk & bare_pids="$bare_pids $!"
until curl -sf -o /dev/null localhost:$((PORT + 1))/private && \
      curl -sf -o /dev/null -H "Authorization: Bearer $token" localhost:$((PORT + 2))/private; do sleep 0.05; done
# 500 tokens of 500 sessions, requested in turn.
python3 - "$PORT" "$work/tokens.lua" <<'PY'
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
port, out = sys.argv[1], sys.argv[2]
def login(_):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/login",
        data=b'{"username":"bench","password":"correct horse battery"}',
        headers={"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))["token"]
with ThreadPoolExecutor(8) as ex:
    tokens = list(ex.map(login, range(500)))
with open(out, "w") as f:
    f.write("tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n")
    f.write("i = 0\nrequest = function()\n  i = i % #tokens + 1\n"
            "  return wrk.format(\"GET\", \"/private\", {[\"Authorization\"] = \"Bearer \" .. tokens[i]})\nend\n")
PY
rps() { awk -F'|' -v l="$1" 'index($2, l) {gsub(/ /, "", $3); print $3}' "$work/rows"; }
{
wrk_line "bare axum, no verification: GET /private, the same token sent (wrk -t1 -c32)" -t1 -c32 -d${DURATION}s \
  -H "Authorization: Bearer $token" http://127.0.0.1:$((PORT + 1))/private
wrk_line "bare axum + jsonwebtoken RS256, the same token repeated (wrk -t1 -c32)" -t1 -c32 -d${DURATION}s \
  -H "Authorization: Bearer $token" http://127.0.0.1:$((PORT + 2))/private
wrk_line "bare axum + jsonwebtoken RS256, 500 tokens in turn (wrk -t1 -c32)" -t1 -c32 -d${DURATION}s \
  -s "$work/tokens.lua" http://127.0.0.1:$((PORT + 2))/private
wrk_line "jotgate GET /private, the same token repeated, again (wrk -t1 -c32)" -t1 -c32 -d${DURATION}s \
  -H "Authorization: Bearer $token" http://127.0.0.1:$PORT/private
wrk_line "jotgate GET /private, 500 tokens in turn (wrk -t1 -c32)" -t1 -c32 -d${DURATION}s \
  -s "$work/tokens.lua" http://127.0.0.1:$PORT/private
} | tee "$work/rows"
kill $bare_pids; bare_pids=
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b; else print "?" }'; }
ratios="repeated token: $(ratio "$(rps 'jotgate GET /private, the same token')" "$(rps 'bare axum, no verification')") of bare axum; \
500 tokens in turn: $(ratio "$(rps 'jotgate GET /private, 500 tokens')" "$(rps 'bare axum + jsonwebtoken RS256, 500 tokens')") of bare axum + jsonwebtoken"
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
echo "- jotgate against the comparison servers of this run: $ratios"
echo "- failed login timing: $enum"
echo "- start-up, spawn to first /healthz 200: $startup"
echo "- peak RSS of the server after all the load above: $rss"
echo "- release binary size (profile release, stripped): $(stat -c %s $BIN | awk '{printf "%.1f MiB", $1/1048576}')"
echo "- machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), wrk and server on the same machine"
