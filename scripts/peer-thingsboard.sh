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
# ThingsBoard's side is a stand-in, not ThingsBoard: the second Mosquitto carries the gateway's
# device API traffic and a small stub on it (thingsboard_stub.py below) answers the one request the
# gateway blocks on. After connecting, tb-mqtt-client asks for its session limits (RPC
# `getSessionLimits` on v1/devices/me/rpc/request/N) and the gateway counts as "not connected",
# so nothing leaves its storage, until a reply with "rateLimits" comes on
# v1/devices/me/rpc/response/N; without one it waits for good (no timeout). The stub replies with
# ThingsBoard's transport defaults (maxPayloadSize 65536, maxInflightMessages 100) and no rate
# limits ("rateLimits" and "gatewayRateLimits" empty), so no tenant-profile limit throttles the
# peer; the client then keeps up to 80 messages in flight. Nothing else is answered (the gateway
# waits for nothing else), and nothing of ThingsBoard's own processing, storage or latency is
# modelled: upstream acknowledges with Mosquitto's PUBACK. (The gateway's "Cannot retrieve
# service configuration" warning comes from Mosquitto's CONNACK properties; it is harmless.)
#
# Mapping: the gateway sends telemetry as time series, one value per (device, key, ts), and merges
# the records of a storage pack that share device and ts. Every receipt of the load carries the
# same "timestamp", so with the key `receipt_id` the receipts of a lane in a pack collapsed into
# one (about 1 in 10 arrived). Each receipt is therefore its own key here (`"R-n": total`, ts
# parsed from "timestamp" into epoch ms as ThingsBoard expects), and the counter counts the R-n
# keys of every {device: [{ts, values}]} message once; an R-n seen again is a duplicate.
#
# Status (2026-12-03, thingsboard-gateway 3.8.5): measured against the stand-in. Delivered is
# receipts that reached the upstream Mosquitto (a QoS 1 subscriber counts them); lost is offered
# minus delivered once upstream has been quiet for 5 s. What shapes the numbers is the peer's
# file storage, not rate limits (there are none). Its connector acknowledges each receipt to the
# store broker on arrival and queues it in memory, then converts it and appends it to a data file
# (10,000 records a file); upstream it forwards packs of 100 records, waiting for a pack's
# PUBACKs before reading the next. The whole (one Python process) gets through about 2,000/s on
# this machine; above that the backlog waits in the peer's memory ahead of the data files (RSS
# grows), acknowledged to the store broker but not yet on disk. The losses are 3.8.5's file
# reader (EventStorageReader.read): after each pack, if a newer data file exists, it moves to it
# and deletes the file it was reading, unread records included (250 records in 3 files of 100,
# read in packs of 10, give back 70). So receipts are lost only when the reader is behind the
# writer at a file rotation: none at 1,000/s, none or a few at 5,000/s, a few thousand flat out,
# all next to the 10,000-record boundaries.
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
  if ! { python3 -m venv "$TB_VENV" && "$TB_VENV/bin/pip" install -q thingsboard-gateway; }; then
    echo "peer-thingsboard: could not install thingsboard-gateway with pip into $TB_VENV;" >&2
    echo "  it needs PyPI access (pip install thingsboard-gateway) and python3-venv" >&2
    exit 2
  fi
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
acked = [0]  # bytes of PUBACK read: after CONNACK the broker sends the publisher only PUBACKs, 4 bytes each
def drain():
    for data in iter(lambda: sock.recv(65536), b''): acked[0] += len(data)
threading.Thread(target=drain, daemon=True).start()
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
offered = total / max(time.time() - start, 0.001)
# Close only once the store broker has acknowledged every receipt: closing with PUBACKs unread
# resets the connection and the broker drops what it has not read yet (some 7,000 of a flat-out
# step's 50,000 here), which would count against the peer.
deadline = time.time() + 120
while acked[0] < 4 * total and time.time() < deadline: time.sleep(0.01)
if acked[0] < 4 * total: print('publisher: the store broker acknowledged %d of %d' % (acked[0] // 4, total), file=sys.stderr)
sock.sendall(bytes([0xe0, 0])); sock.close()
print(offered)
EOF

cat > "$WORK/thingsboard_stub.py" <<'EOF'
# ThingsBoard's side of the protocol, only what the gateway waits for: the answer to its
# getSessionLimits RPC (ThingsBoard's transport defaults, no rate limits). A stand-in, not ThingsBoard.
import json, sys
import paho.mqtt.client as mqtt
LIMITS = json.dumps({"maxPayloadSize": 65536, "maxInflightMessages": 100, "rateLimits": {}, "gatewayRateLimits": {}})
def on_connect(client, userdata, flags, reason, properties):
    client.subscribe("v1/devices/me/rpc/request/+", qos=1)
def on_subscribe(client, userdata, mid, reasons, properties):
    print("subscribed", flush=True)
def on_message(client, userdata, msg):
    try: method = json.loads(msg.payload).get("method")
    except (ValueError, AttributeError): return
    if method == "getSessionLimits":
        client.publish("v1/devices/me/rpc/response/" + msg.topic.rsplit("/", 1)[1], LIMITS, qos=1)
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="thingsboard-stub")
client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
client.connect("127.0.0.1", int(sys.argv[1]))
client.loop_forever()
EOF

cat > "$WORK/count.py" <<'EOF'
import json, re, sys
receipt = re.compile(r'R-[0-9]+$')
seen, dup = set(), 0
for line in open(sys.argv[1], errors='replace'):
    try: message = json.loads(line)
    except ValueError: continue
    if not isinstance(message, dict): continue
    for device, points in message.items():
        for point in points if isinstance(points, list) else [points]:
            values = point.get('values', point) if isinstance(point, dict) else {}
            for rid in [k for k in values if receipt.match(k)] + [values.get('receipt_id')]:
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
  mosquitto_sub -p "$UPSTREAM_PORT" -q 1 -t 'v1/gateway/telemetry' > "$step/upstream.txt" &
  PIDS+=($!)
  "$TB_VENV/bin/python" "$WORK/thingsboard_stub.py" "$UPSTREAM_PORT" > "$step/thingsboard-stub.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 20); do grep -q subscribed "$step/thingsboard-stub.log" && break; sleep 0.25; done
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
   "timeseries": [{"type": "string", "key": "\${receipt_id}", "value": "\${total}", "tsField": "\${timestamp}"}]}}]}
EOF
  cp "$TB_VENV/lib/"python3*/site-packages/thingsboard_gateway/config/logs.json "$step/tb/config/" 2>/dev/null || true
  sed -i "s#\./logs/#$step/tb/logs/#g; s#/var/log/thingsboard-gateway/#$step/tb/logs/#g" "$step/tb/config/logs.json" 2>/dev/null || true
  (cd "$step/tb" && TB_GW_CONFIG_DIR="$step/tb/config" exec "$TB_VENV/bin/thingsboard-gateway" > "$step/tb/stdout.log" 2>&1) &
  TB=$!; PIDS+=("$TB")
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
