#!/usr/bin/env bash
# Soak: 60 s of mixed traffic on loopback against the release binary, then a verdict.
#
#   - GET /private with valid and invalid tokens (wrk, one in four tokens forged);
#   - refreshes of 40 sessions in a loop, each client keeping its own chain;
#   - correct logins at the hashing pool's capacity (one client per hashing worker);
#   - a login flood beyond it: wrong passwords for random users from random addresses
#     (X-Forwarded-For, trusted here), 128 connections: twice the default hashing queue.
#
# Samples the server's RSS every second and counts answers by status from its access log.
# Passes when no answer is 5xx, the flood is answered 429/401 (never OOM or a dropped
# connection), and RSS after the first 10 s stays within 10 % of what it was at 10 s.
#
#   benches/soak.sh                  # needs wrk (apt-get install wrk) and python3
#   DURATION=120 benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}
PORT=${PORT:-18090}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -q
BIN=${BIN:-target/release/jotgate}
work=$(mktemp -d)
trap 'kill ${pid:-} ${loads:-} 2>/dev/null || true; rm -rf "$work"' EXIT

JOTGATE_LOG=access=info,warn $BIN serve --database "$work/db.sqlite" --listen 127.0.0.1:$PORT \
  --log-format json --trust-forwarded-for >"$work/server.log" 2>&1 & pid=$!
until curl -sf localhost:$PORT/healthz >/dev/null; do sleep 0.05; done

# 40 accounts (from 40 addresses, under the sign-up limit per address): tokens, a forged
# token per four, and the refresh tokens.
python3 - "$PORT" "$work" <<'PY'
import json, sys, urllib.request
port, work = sys.argv[1], sys.argv[2]
def post(path, body, ip):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-forwarded-for": ip})
    return json.load(urllib.request.urlopen(req))
tokens, refresh = [], []
for i in range(40):
    r = post("/signup", {"username": f"soak{i}", "password": "correct horse battery"}, f"10.9.0.{i + 1}")
    tokens.append(r["token"]); refresh.append(r["refresh_token"])
bad = [t[:-1] + ("A" if t[-1] != "A" else "Q") for t in tokens[::4]]
with open(f"{work}/tokens.lua", "w") as f:
    f.write("tokens = {" + ",".join(f'"{t}"' for t in tokens + bad) + "}\n")
    f.write("i = 0\nrequest = function()\n  i = i % #tokens + 1\n"
            "  return wrk.format(\"GET\", \"/private\", {[\"Authorization\"] = \"Bearer \" .. tokens[i]})\nend\n")
json.dump(refresh, open(f"{work}/refresh.json", "w"))
PY
cat >"$work/flood.lua" <<'LUA'
math.randomseed(os.time())
request = function()
  local ip = math.random(1, 223) .. "." .. math.random(0, 255) .. "." .. math.random(0, 255) .. "." .. math.random(1, 254)
  local body = '{"username":"nobody' .. math.random(1, 1000000) .. '","password":"wrong password here"}'
  return wrk.format("POST", "/login", {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip}, body)
end
LUA

wrk -t1 -c16 -d${DURATION}s -s "$work/tokens.lua" http://127.0.0.1:$PORT/private >"$work/private.out" 2>&1 & loads="$!"
wrk -t1 -c128 -d${DURATION}s --timeout 10s -s "$work/flood.lua" http://127.0.0.1:$PORT/login >"$work/flood.out" 2>&1 & loads="$loads $!"
python3 - "$PORT" "$work" "$DURATION" "$pid" <<'PY'
import json, sys, threading, time, urllib.request, urllib.error
port, work, duration, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
end = time.time() + duration
counts, lock = {}, threading.Lock()
def post(path, body, ip):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-forwarded-for": ip})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
    except Exception as e:
        return type(e).__name__, None
def note(kind, status):
    with lock:
        counts[(kind, status)] = counts.get((kind, status), 0) + 1
def refresher(chains, n):
    while time.time() < end:
        for i, rt in enumerate(chains):
            status, body = post("/refresh", {"refresh_token": rt}, f"10.8.{n}.1")
            note("refresh", status)
            if status == 200:
                chains[i] = body["refresh_token"]
def login(n):
    while time.time() < end:
        status, _ = post("/login", {"username": f"soak{n}", "password": "correct horse battery"}, f"10.7.0.{n + 1}")
        note("login (correct)", status)
refresh = json.load(open(f"{work}/refresh.json"))
threads = [threading.Thread(target=refresher, args=(refresh[i::4], i)) for i in range(4)]
threads += [threading.Thread(target=login, args=(n,)) for n in range(2)]
for t in threads: t.start()
rss = []
start = time.time()
while time.time() < end:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
    rss.append((time.time() - start, kb / 1024))
    time.sleep(1)
for t in threads: t.join()
json.dump({"rss": rss, "clients": {f"{k} {s}": v for (k, s), v in sorted(counts.items(), key=str)}},
          open(f"{work}/python.json", "w"))
PY
wait $loads 2>/dev/null || true
loads=""
sleep 1
python3 - "$work" "$DURATION" <<'PY'
import json, re, sys
work, duration = sys.argv[1], int(sys.argv[2])
py = json.load(open(f"{work}/python.json"))
by_status, other = {}, 0
for line in open(f"{work}/server.log"):
    try:
        rec = json.loads(line)
    except ValueError:
        other += 1
        continue
    st = rec.get("status") if rec.get("target") == "access" else None
    if st is not None:
        by_status[st] = by_status.get(st, 0) + 1
def wrk(name):
    text = open(f"{work}/{name}.out").read()
    rps = re.search(r"Requests/sec:\s*([\d.]+)", text)
    errs = re.search(r"Socket errors: (.*)", text)
    return (rps.group(1) if rps else "?"), (errs.group(1) if errs else "none")
rss = py["rss"]
at10 = next((m for t, m in rss if t >= 10), rss[-1][1])
after = [m for t, m in rss if t >= 10]
print(f"| soak, {duration} s | |")
print("|---|---|")
for name, label in [("private", "GET /private, valid and forged tokens (wrk -c16)"), ("flood", "login flood, random users and addresses (wrk -c128)")]:
    rps, errs = wrk(name)
    print(f"| {label} | {rps} req/s, socket errors: {errs} |")
for k, v in py["clients"].items():
    print(f"| {k} | {v} |")
print(f"| answers by status (access log) | {', '.join(f'{k}: {v}' for k, v in sorted(by_status.items()))} |")
print(f"| RSS at 10 s / highest after / at the end | {at10:.1f} / {max(after):.1f} / {rss[-1][1]:.1f} MiB |")
fives = sum(v for k, v in by_status.items() if int(k) >= 500)
flat = max(after) <= at10 * 1.10
ok = fives == 0 and flat and by_status.get(429, 0) > 0
print(f"| verdict | {'PASS' if ok else 'FAIL'}: {fives} answers 5xx, RSS {'flat' if flat else 'GREW'} after 10 s, {by_status.get(429, 0)} answered 429 |")
sys.exit(0 if ok else 1)
PY
