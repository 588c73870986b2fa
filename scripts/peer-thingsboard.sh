#!/usr/bin/env bash
# The peer of `cargo bench --bench e2e`: the ThingsBoard IoT Gateway (pip `thingsboard-gateway`,
# file storage), the usual open-source MQTT -> disk -> upstream gateway, through the same load:
# an open-loop raw-socket publisher offering QoS 1 receipts (R-0, R-1, ... on lanes L1..L8, the
# same JSON as testkit::flood) to a store Mosquitto at fixed rates. The peer's MQTT connector
# takes them and its file storage forwards them upstream; no ThingsBoard server runs here, so a
# second Mosquitto plays it (the gateway speaks ThingsBoard's device API, `v1/gateway/telemetry`)
# and a subscriber there counts what arrived. The peer gives no answer to the lane, so
# "delivered" is receipts that reached upstream. Reported per rate: offered/s, delivered/s,
# lost, duplicated, the peer's peak RSS and CPU per receipt (utime+stime of its process).
#
# Status (2026-12-02, thingsboard-gateway 3.8.5): the peer installs from PyPI, connects to both
# brokers and writes every receipt to its file storage, but with a Mosquitto standing in for
# ThingsBoard it never forwards anything upstream (it waits for answers only a ThingsBoard
# server gives: "Cannot retrieve service configuration"), so delivered is 0 here. Measuring
# its delivery needs a ThingsBoard server (not installable here) and counting through its API.
#
# Needs: python3 with venv, mosquitto and mosquitto_sub (apt-get install mosquitto
# mosquitto-clients), and pip access to install thingsboard-gateway (3.8.5 was measured) into a
# virtualenv (TB_VENV, default /tmp/peer-thingsboard-venv), or TB_VENV pointing at one that has it.
#
# Usage: scripts/peer-thingsboard.sh [SECONDS] [RATES]    e.g. scripts/peer-thingsboard.sh 10 "1000 5000 0"
# (rate 0 = flat out: as many receipts as the 5,000/s step, as fast as the broker takes them)
set -euo pipefail

SECONDS_PER_STEP="${1:-10}"
RATES="${2:-1000 5000 0}"
TB_VENV="${TB_VENV:-/tmp/peer-thingsboard-venv}"
WORK="$(mktemp -d /tmp/peer-thingsboard.XXXXXX)"
STORE_PORT="${STORE_PORT:-18931}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18932}"

for tool in python3 mosquitto mosquitto_sub; do
  command -v "$tool" >/dev/null || { echo "peer-thingsboard: needs $tool (apt-get install python3-venv mosquitto mosquitto-clients)" >&2; exit 2; }
done
if [ ! -x "$TB_VENV/bin/thingsboard-gateway" ]; then
  python3 -m venv "$TB_VENV" && "$TB_VENV/bin/pip" install -q thingsboard-gateway || {
    echo "peer-thingsboard: could not install thingsboard-gateway with pip into $TB_VENV;" >&2
    echo "  it needs PyPI access (pip install thingsboard-gateway) and python3-venv" >&2
    exit 2
  }
fi

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

broker() { # port dir
  mkdir -p "$2"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nset_tcp_nodelay true\nmax_queued_messages 200000\nmax_inflight_messages 100\n' "$1" "$2" > "$2/mosquitto.conf"
  mosquitto -c "$2/mosquitto.conf" >/dev/null 2>&1 &
  PIDS+=($!)
}

cat > "$WORK/publish.py" <<'EOF'
import json, socket, struct, sys, threading, time
port, rate, total = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
def length(n):
    out = b''
    while True:
        b = n % 128; n //= 128
        out += bytes([b | (128 if n else 0)])
        if not n: return out
def s(x): x = x.encode(); return struct.pack('>H', len(x)) + x
sock = socket.create_connection(('127.0.0.1', port)); sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
var = s('MQTT') + bytes([4, 2]) + struct.pack('>H', 60) + s('peer-publisher')
sock.sendall(bytes([0x10]) + length(len(var)) + var); sock.recv(4)
threading.Thread(target=lambda: [None for _ in iter(lambda: sock.recv(65536), b'')], daemon=True).start()
start = time.time(); n = 0; pid = 0
while n < total:
    due = min(total, int((time.time() - start) * rate) if rate > 0 else n + 64)
    buf = b''
    while n < due:
        lane = 'L%d' % (n % 8 + 1)
        body = json.dumps({"receipt_id": "R-%d" % n, "lane": lane, "timestamp": "2026-11-23T10:15:00+01:00",
            "kind": "sale", "currency": "EUR", "total": "2.98", "lines": [{"sku": "4006381333931",
            "name": "4006381333931", "qty": 2, "amount": "2.98", "category": "stationery"}]}).encode()
        pid = pid % 65535 + 1
        var = s('loyalty/S042/lane/%s/receipt' % lane) + struct.pack('>H', pid) + body
        buf += bytes([0x32]) + length(len(var)) + var; n += 1
    if buf: sock.sendall(buf)
    if rate > 0: time.sleep(0.001)
print(total / max(time.time() - start, 0.001))
EOF

cat > "$WORK/count.py" <<'EOF'
import json, sys
seen, dup = set(), 0
for line in open(sys.argv[1], errors='replace'):
    try: message = json.loads(line)
    except ValueError: continue
    for device, points in message.items():
        for point in points if isinstance(points, list) else [points]:
            rid = point.get('values', point).get('receipt_id')
            if rid is None: continue
            if rid in seen: dup += 1
            seen.add(rid)
print(len(seen), dup)
EOF

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

echo "peer: ThingsBoard IoT Gateway $("$TB_VENV/bin/pip" show thingsboard-gateway 2>/dev/null | awk '/^Version/{print $2}'), file storage; 8 lanes, QoS 1 open loop, ${SECONDS_PER_STEP} s offered per step"
echo "offered/s  delivered/s  lost  dup  RSS peak KiB  CPU us/receipt"
for rate in $RATES; do
  step="$WORK/step-$rate"; mkdir -p "$step/tb/config" "$step/tb/data" "$step/tb/logs"
  broker "$STORE_PORT" "$step/store-broker"
  broker "$UPSTREAM_PORT" "$step/upstream-broker"
  sleep 0.5
  mosquitto_sub -p "$UPSTREAM_PORT" -q 0 -t 'v1/gateway/telemetry' > "$step/upstream.txt" &
  PIDS+=($!)
  cat > "$step/tb/config/tb_gateway.json" <<EOF
{"thingsboard": {"host": "127.0.0.1", "port": $UPSTREAM_PORT, "remoteShell": false, "remoteConfiguration": false,
  "statistics": {"enable": false, "statsSendPeriodInSeconds": 3600}, "deviceFiltering": {"enable": false},
  "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
  "checkConnectorsConfigurationInSeconds": 3600, "handleDeviceRenaming": false,
  "security": {"type": "accessToken", "accessToken": "peer"}, "qos": 1,
  "reportStrategy": {"type": "ON_RECEIVED"},
  "checkingDeviceActivity": {"checkDeviceInactivity": false}},
 "storage": {"type": "file", "data_folder_path": "$step/tb/data/", "max_file_count": 100,
  "max_read_records_count": 100, "max_records_per_file": 10000},
 "grpc": {"enabled": false},
 "connectors": [{"type": "mqtt", "name": "Store broker", "configuration": "mqtt.json"}]}
EOF
  cat > "$step/tb/config/mqtt.json" <<EOF
{"broker": {"host": "127.0.0.1", "port": $STORE_PORT, "clientId": "peer-thingsboard", "version": 4,
  "maxMessageNumberPerWorker": 10, "maxNumberOfWorkers": 100, "cleanSession": false,
  "security": {"type": "anonymous"}},
 "dataMapping": [{"topicFilter": "loyalty/S042/lane/+/receipt", "subscriptionQos": 1,
  "converter": {"type": "json", "deviceInfo": {"deviceNameExpressionSource": "message",
   "deviceNameExpression": "\${lane}", "deviceProfileExpressionSource": "constant", "deviceProfileExpression": "till"},
   "sendDataOnlyOnChange": false, "timeout": 60000, "attributes": [],
   "timeseries": [{"type": "string", "key": "receipt_id", "value": "\${receipt_id}"},
                  {"type": "string", "key": "total", "value": "\${total}"}]}}]}
EOF
  cp "$TB_VENV/lib/"python3*/site-packages/thingsboard_gateway/config/logs.json "$step/tb/config/" 2>/dev/null || true
  sed -i "s#\./logs/#$step/tb/logs/#g; s#/var/log/thingsboard-gateway/#$step/tb/logs/#g" "$step/tb/config/logs.json" 2>/dev/null || true
  (cd "$step/tb" && TB_GW_CONFIG_DIR="$step/tb/config" exec "$TB_VENV/bin/thingsboard-gateway" > "$step/tb/stdout.log" 2>&1) &
  TB=$!; PIDS+=($TB)
  sleep 8
  total=$(( (rate > 0 ? rate : 5000) * SECONDS_PER_STEP ))
  before=$(cpu_ticks "$TB")
  started=$(date +%s.%N)
  offered=$(python3 "$WORK/publish.py" "$STORE_PORT" "$rate" "$total")
  # Wait until upstream stops growing for 5 s, having seen something (at most 120 s).
  last=-1; still=0; waited=0
  while { [ $still -lt 5 ] || [ "$last" -le 0 ]; } && [ $waited -lt 120 ]; do
    sleep 1; waited=$((waited+1)); now=$(wc -l < "$step/upstream.txt")
    if [ "$now" = "$last" ]; then still=$((still+1)); else still=0; last=$now; fi
  done
  ended=$(date +%s.%N)
  after=$(cpu_ticks "$TB")
  rss=$(awk '/VmHWM/{print $2}' "/proc/$TB/status" 2>/dev/null || echo 0)
  read -r delivered dup < <(python3 "$WORK/count.py" "$step/upstream.txt")
  hz=$(getconf CLK_TCK)
  python3 - "$offered" "$delivered" "$dup" "$total" "$started" "$ended" "$before" "$after" "$hz" "$rss" <<'EOF'
import sys
offered, delivered, dup, total, started, ended, before, after, hz, rss = sys.argv[1:]
delivered, dup, total = int(delivered), int(dup), int(total)
span = float(ended) - float(started) - 5  # minus the quiet wait at the end
cpu_us = (float(after) - float(before)) / float(hz) * 1e6 / max(delivered, 1)
print(f"{float(offered):>9.0f} {delivered / max(span, 0.001):>12.0f} {total - delivered:>5} {dup:>4} {rss:>13} {cpu_us:>15.0f}")
EOF
  cleanup; PIDS=(); sleep 1
done
