#!/usr/bin/env bash
# Measures the daemon as systemd would see it: start-up time (exec to READY=1 on NOTIFY_SOCKET),
# idle RSS after a settling period, and shutdown time (SIGTERM to exit; must stay well below the
# unit's TimeoutStopSec=30).
#
#   cross/measure.sh --config PATH [--binary PATH] [--settle SECONDS] [--seed-cmd 'COMMAND']
#
# --seed-cmd runs once before the measurement to fill the store; the gateway's own command fills
# an EMPTY store (a scratch storage.data_dir; it refuses one that holds customers) with synthetic
# customers in bounded memory (~70 MB):
#   --seed-cmd 'loyalty-gateway seed-test-customers --config /tmp/m/gateway.toml --count 1000000'
# The figures the project tracks:
#   idle RSS with 100,000 customers        cross/measure.sh --config C --seed-cmd '... --count 100000'
#   start-up time with 1,000,000 customers cross/measure.sh --config C --seed-cmd '... --count 1000000'
# Run natively (RSS under qemu-user is not representative); on a Pi, copy this script over.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${CARGO_TARGET_DIR:-target}/release/loyalty-gateway
config=""
settle=10
seed_cmd=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --seed-cmd) seed_cmd=$2; shift 2 ;;
    *) echo "usage: cross/measure.sh --config PATH [--binary PATH] [--settle SECONDS] [--seed-cmd CMD]" >&2; exit 2 ;;
  esac
done
[ -n "$config" ] || { echo "measure.sh: --config is required" >&2; exit 2; }
[ -x "$binary" ] || { echo "measure.sh: $binary not found (cargo build --release, or pass --binary)" >&2; exit 2; }

if [ -n "$seed_cmd" ]; then
  echo "measure.sh: seeding: $seed_cmd"
  seed_start=$(date +%s.%N)
  bash -c "$seed_cmd"
  awk -v a="$seed_start" -v b="$(date +%s.%N)" 'BEGIN { printf "measure.sh: seeded in %.1f s\n", b - a }'
fi

python3 - "$binary" "$config" "$settle" <<'PY'
import os, signal, socket, subprocess, sys, tempfile, time

binary, config, settle = sys.argv[1], sys.argv[2], float(sys.argv[3])
tmp = tempfile.mkdtemp()
path = os.path.join(tmp, "notify.sock")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="30000000")
env.pop("WATCHDOG_PID", None)  # unset: the watchdog is meant for whichever process reads it
start = time.monotonic()
proc = subprocess.Popen([binary, "run", "--config", config], env=env)

def receive(deadline):
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(4096).decode(errors="replace")
    except socket.timeout:
        return None

ready_at = None
deadline = start + 300
while ready_at is None and time.monotonic() < deadline:
    message = receive(deadline)
    if message is None or proc.poll() is not None:
        break
    if "READY=1" in message.split("\n"):
        ready_at = time.monotonic()
if ready_at is None:
    proc.kill()
    sys.exit("measure.sh: no READY=1 within 300 s (exit status %s)" % proc.poll())
print("start-up: %.3f s (exec to READY=1)" % (ready_at - start))

pings = 0
end = time.monotonic() + settle
while time.monotonic() < end:
    message = receive(end)
    if message and "WATCHDOG=1" in message.split("\n"):
        pings += 1
with open("/proc/%d/status" % proc.pid) as status:
    fields = dict(line.split(":", 1) for line in status if ":" in line)
print("idle RSS after %.0f s: %s (peak %s); watchdog pings meanwhile: %d"
      % (settle, fields["VmRSS"].strip(), fields["VmHWM"].strip(), pings))

stop = time.monotonic()
proc.send_signal(signal.SIGTERM)
try:
    code = proc.wait(timeout=60)
except subprocess.TimeoutExpired:
    proc.kill()
    sys.exit("measure.sh: still running 60 s after SIGTERM")
print("shutdown: %.3f s (SIGTERM to exit, status %d; the unit allows 30 s)" % (time.monotonic() - stop, code))
PY
