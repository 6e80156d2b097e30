#!/usr/bin/env bash
# Real users under a login attack (issue 20), against the release binary on loopback with
# the default limits, the server on CPU 0 and every load generator on CPU 1:
#
#   A. flood: wrk -c800 sends wrong passwords for random usernames from random addresses
#      (X-Forwarded-For, trusted). Meanwhile June logs in with her device token and the
#      right password every 0.25 s, and May — who signed in from her address before but
#      keeps no device token — does the same without one.
#   B. targeted guessing: wrk -c20 guesses June's password from random addresses. June
#      logs in with her device token every 0.25 s; May-style, June also tries without it.
#      The guesses evaluated are the 401s; the ceiling (login_user_ceiling, 100 an hour)
#      must bound them.
#
# Each scenario runs on a fresh store. Prints a Markdown table; docs/benchmarks.md
# records results. Passes when every device-token login succeeds, their p99 is at most
# 2 s, and the guesses evaluated in B stay within the ceiling.
#
#   benches/flood.sh                 # needs wrk (apt-get install wrk) and python3
#   DURATION=60 benches/flood.sh
#   PIN=0 benches/flood.sh           # no CPU pinning
#   PG=postgres://postgres@127.0.0.1:5432 benches/flood.sh
#                                    # on PostgreSQL: a database per scenario (needs psql)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30}
PORT=${PORT:-18095}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
SRV="" LOAD=""
if [ "${PIN:-1}" = 1 ]; then SRV="taskset -c 0" LOAD="taskset -c 1"; fi
cargo build --release --locked -q
BIN=${BIN:-target/release/jotgate}
work=$(mktemp -d)
trap 'kill ${pid:-} ${loads:-} 2>/dev/null || true; rm -rf "$work"' EXIT

# wrk: a wrong password from a random address per request, answers counted by status.
cat >"$work/attack.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  target = args[1]
  counts = {}
end
request = function()
  local ip = math.random(1, 223) .. "." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(1, 254)
  local name = target or ("nobody" .. math.random(1, 1000000))
  local body = '{"username":"' .. name .. '","password":"wrong password ' .. math.random(1, 1000000) .. '"}'
  return wrk.format("POST", "/login", {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip}, body)
end
response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
done = function(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d %d\n", k, v)) end
  io.write(string.format("requests %d\n", summary.requests))
  io.write(string.format("errors %d %d %d %d %d\n", summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout))
end
LUA

# $1 = scenario letter, $2 = wrk connections, $3 = wrk's target username ("" for random)
scenario() {
  local name=$1 conns=$2 target=$3
  rm -f "$work/db.sqlite"*
  local store="sqlite://$work/db.sqlite"
  if [ -n "${PG:-}" ]; then
    local db="jotgate_flood_${name,,}"
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db" -qc "CREATE DATABASE $db"
    store="$PG/$db"
  fi
  $SRV $BIN serve --store "$store" --listen 127.0.0.1:$PORT \
    --trust-forwarded-for >"$work/server.log" 2>&1 & pid=$!
  until curl -sf localhost:$PORT/healthz >/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.05
  done
  # June and May sign up (and so have signed in before) from their own addresses.
  python3 - "$PORT" "$work" <<'PY'
import json, sys, urllib.request
port, work = sys.argv[1], sys.argv[2]
def post(body, ip):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/signup", data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-forwarded-for": ip})
    return json.load(urllib.request.urlopen(req))
june = post({"username": "june", "password": "correct horse battery"}, "198.51.100.20")
post({"username": "may", "password": "correct horse battery"}, "198.51.100.21")
open(f"{work}/device", "w").write(june["device_token"])
PY
  $LOAD wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 10s -s "$work/attack.lua" \
    http://127.0.0.1:$PORT/login -- $target >"$work/wrk.out" 2>&1 & loads=$!
  sleep 2 # the attack is under way
  $LOAD python3 - "$PORT" "$work" "$((DURATION - 3))" "$pid" "$name" <<'PY'
import json, sys, threading, time, urllib.request, urllib.error
port, work, duration, pid, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
end = time.time() + duration
results = {}
def login(label, user, ip, keep_device):
    device = open(f"{work}/device").read() if keep_device else None
    out = []
    while time.time() < end:
        body = {"username": user, "password": "correct horse battery"}
        if device:
            body["device_token"] = device
        req = urllib.request.Request(f"http://127.0.0.1:{port}/login", data=json.dumps(body).encode(),
            headers={"content-type": "application/json", "x-forwarded-for": ip})
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status = r.status
                answer = json.load(r)
                if device and answer.get("device_token"):
                    device = answer["device_token"]  # the renewed token
        except urllib.error.HTTPError as e:
            status = e.code
        except Exception as e:
            status = type(e).__name__
        out.append((status, time.perf_counter() - t0))
        time.sleep(max(0.0, 0.25 - (time.perf_counter() - t0)))
    results[label] = out
users = [("June, device token", "june", "198.51.100.20", True)]
if name == "A":
    users.append(("May, no device token", "may", "198.51.100.21", False))
else:
    users.append(("June, no device token", "june", "198.51.100.20", False))
threads = [threading.Thread(target=login, args=u) for u in users]
for t in threads: t.start()
for t in threads: t.join()
with open(f"/proc/{pid}/status") as f:
    hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
json.dump({"results": results, "hwm": hwm}, open(f"{work}/users-{name}.json", "w"))
PY
  wait $loads 2>/dev/null || true
  loads=""
  cp "$work/wrk.out" "$work/wrk-$name.out"
  kill $pid; wait $pid 2>/dev/null || true
  pid=""
}

scenario A 800 ""
scenario B 20 june

STORE_KIND=$([ -n "${PG:-}" ] && echo PostgreSQL || echo SQLite) python3 - "$work" "$DURATION" <<'PY'
import json, os, re, sys
work, duration = sys.argv[1], int(sys.argv[2])
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")
def wrk(name):
    text = open(f"{work}/wrk-{name}.out").read()
    statuses = {int(a): int(b) for a, b in re.findall(r"status (\d+) (\d+)", text)}
    rps = re.search(r"Requests/sec:\s*([\d.]+)", text)
    errs = re.search(r"errors (\d+) (\d+) (\d+) (\d+) (\d+)", text)
    return statuses, (rps.group(1) if rps else "?"), errs.groups() if errs else ("?",) * 5
ok = True
print(f"| scenario ({duration} s each, {os.environ.get('STORE_KIND', 'SQLite')}) | result |")
print("|---|---|")
for name, label, conns in [("A", "flood: random names from random addresses", 800),
                           ("B", "targeted: June's password from random addresses", 20)]:
    statuses, rps, errs = wrk(name)
    users = json.load(open(f"{work}/users-{name}.json"))
    ans = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    print(f"| {name}. {label} (wrk -c{conns}) | {rps} req/s; answers {ans}; "
          f"socket errors connect/read/write/timeout {errs[0]}/{errs[1]}/{errs[2]}/{errs[4]} |")
    for who, out in users["results"].items():
        lat = [t for s, t in out]
        by = {}
        for s, _ in out:
            by[s] = by.get(s, 0) + 1
        good = by.get(200, 0)
        print(f"| {name}. {who}, every 0.25 s | {good} of {len(out)} in "
              f"({', '.join(f'{k}: {v}' for k, v in sorted(by.items(), key=str))}); "
              f"p50 {pct(lat, 50) * 1000:.0f} ms, p99 {pct(lat, 99) * 1000:.0f} ms, "
              f"max {max(lat) * 1000:.0f} ms |")
        if "device token" in who and "no device" not in who:
            ok &= good == len(out) and pct(lat, 99) <= 2.0
    print(f"| {name}. server peak RSS | {users['hwm']:.1f} MiB |")
    if name == "B":
        guesses = statuses.get(401, 0)
        ok &= guesses <= 100
        print(f"| B. guesses evaluated against June's password (401s) | {guesses} "
              f"(ceiling: 100 an hour) |")
print(f"| verdict | {'PASS' if ok else 'FAIL'} |")
sys.exit(0 if ok else 1)
PY
