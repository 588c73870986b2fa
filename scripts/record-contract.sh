#!/usr/bin/env bash
# Records what a gateway binary shows the outside world, normalised so that two recordings of
# the same behaviour are byte-identical. To check that a change (e.g. a refactor) keeps it:
#
#   scripts/record-contract.sh OLD_BIN /tmp/a; scripts/record-contract.sh NEW_BIN /tmp/b
#   diff -r /tmp/a /tmp/b
#
# It runs `BIN demo --duration-secs 0 --keep-data` (the scripted story only; over MQTT, so it
# needs mosquitto and mosquitto_sub from mosquitto-clients) and writes into OUTDIR:
#   demo.txt   the demo's stdout (the voucher's QR code drawing becomes one line);
#   till.txt   every answer the gateway published on loyalty/demo-store/lane/+/response, in
#              order, as `mosquitto_sub -v` prints it (topic, space, JSON bytes), captured on the
#              demo's private broker; a voucher's escpos_base64 is shown decoded (\xNN escapes);
#   crm.jsonl  every event the reference CRM acknowledged, in seq order, with the bytes sent.
#              The demo's CRM keeps them in memory only, so they are read from the gateway's
#              outbox in the kept data dir: sled stores each event's JSON text verbatim and the
#              uploader sends that text as is. The count must match the demo's "The CRM holds N".
# Values that differ between runs become placeholders: temp paths, ports, recent timestamps and
# dates, customer ids (<CUSTOMER_1>... in order of appearance), event ids, ledger hashes, the
# voucher key, signed voucher texts, latencies. Everything else is kept byte for byte.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 BINARY OUTDIR" >&2; exit 2; }
bin=$(realpath "$1")
out=$2
command -v mosquitto_sub >/dev/null || { echo "$0: needs mosquitto_sub (apt-get install mosquitto-clients)" >&2; exit 2; }
work=$(mktemp -d)
pids=()
cleanup() {
    local pid child
    for pid in "${pids[@]}"; do
        # The demo's own broker is its child: stop it too when the demo is cut short.
        for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null) "$pid"; do
            kill -CONT "$child" 2>/dev/null || true
            kill "$child" 2>/dev/null || true
        done
    done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM
recent=$(date -u -d '-1 day' +%F) # dates from here on are the run's own, not the story's

# One demo run into $1. Its broker's port is read from its output; the demo is frozen
# (SIGSTOP) until mosquitto_sub is subscribed, so the capture starts before any lane traffic.
run_demo() {
    local dir=$1 line port='' subscribed='' demo sub copier
    mkdir -p "$dir/tmp"
    mkfifo "$dir/demo.pipe" "$dir/sub.pipe"
    : >"$dir/demo.raw"
    TMPDIR="$dir/tmp" "$bin" demo --duration-secs 0 --keep-data >"$dir/demo.pipe" 2>"$dir/demo.err" &
    demo=$!
    pids+=("$demo")
    exec 3<"$dir/demo.pipe"
    while IFS= read -r line <&3; do
        printf '%s\n' "$line" >>"$dir/demo.raw"
        if [[ $line =~ A\ private\ Mosquitto\ on\ 127\.0\.0\.1:([0-9]+) ]]; then
            port=${BASH_REMATCH[1]}
            kill -STOP "$demo"
            break
        fi
    done
    [[ -n $port ]] || { cat "$dir/demo.raw" "$dir/demo.err" >&2; echo "$0: the demo started no broker (is mosquitto installed?)" >&2; exit 1; }
    stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -q 1 -v -d -t 'loyalty/demo-store/#' >"$dir/sub.pipe" &
    sub=$!
    pids+=("$sub")
    exec 4<"$dir/sub.pipe"
    while IFS= read -r line <&4; do [[ $line == *"received SUBACK"* ]] && { subscribed=1; break; }; done
    [[ -n $subscribed ]] || { echo "$0: mosquitto_sub could not subscribe on the demo's broker" >&2; exit 1; }
    cat <&4 >"$dir/sub.raw" &
    copier=$!
    pids+=("$copier")
    kill -CONT "$demo"
    cat <&3 >>"$dir/demo.raw"
    wait "$demo" || { cat "$dir/demo.raw" "$dir/demo.err" >&2; echo "$0: the demo failed" >&2; exit 1; }
    kill "$sub" 2>/dev/null || true # it would wait for the demo's broker forever
    wait "$copier" || true
    exec 3<&- 4<&-
    # The demo starts its tills once the gateway says it is connected, which can be before the
    # broker has the gateway's subscriptions (then a till message is lost). Its retained
    # "online" status is published right after subscribing: it must come before any lane message.
    grep -m1 -E '^loyalty/demo-store/(gateway/status online|lane/)' "$dir/sub.raw" |
        grep -q '^loyalty/demo-store/gateway/status online' || touch "$dir/raced"
}

for attempt in 1 2 3; do
    dir=$work/$attempt
    run_demo "$dir"
    [[ -e $dir/raced ]] || break
    echo "$0: the demo's tills started before the gateway had subscribed (attempt $attempt); again" >&2
    [[ $attempt -lt 3 ]] || exit 1
done

data=$(sed -n 's/^loyalty-gateway demo: .*(data in \(.*\))$/\1/p' "$dir/demo.raw")
[[ -d $data/gateway ]] || { echo "$0: no kept data dir in the demo's output" >&2; exit 1; }

# The till JSON; a voucher's ESC/POS bytes decoded, so that its varying text can be normalised.
{ grep -E '^loyalty/demo-store/lane/[^/ ]+/response ' "$dir/sub.raw" || true; } | python3 -c '
import base64, re, sys
def show(m):
    raw = base64.b64decode(m.group(1))
    text = "".join(chr(b) if 32 <= b < 127 and b not in b"\\\"" else "\\x%02x" % b for b in raw)
    return "\"escpos_base64\":\"<decoded: " + text + ">\""
for line in sys.stdin:
    sys.stdout.write(re.sub(r"\"escpos_base64\":\"([^\"]*)\"", show, line))
' >"$dir/till.raw"
shown=$(grep -c '^    ← ' "$dir/demo.raw" || true)
got=$(wc -l <"$dir/till.raw")
[[ $got -eq $shown ]] || { echo "$0: $got answers on MQTT, but the demo showed $shown" >&2; exit 1; }

# The CRM events, from the kept gateway store (every copy sled holds of an event is the same).
held=$(sed -nE 's/^  The CRM holds ([0-9]+) distinct events, acknowledged through sequence \1 of \1\.$/\1/p' "$dir/demo.raw")
[[ -n $held ]] || { echo "$0: the CRM did not acknowledge every event" >&2; exit 1; }
python3 - "$data/gateway" "$held" >"$dir/crm.raw" <<'EOF'
import json, os, re, sys
root, held = sys.argv[1], int(sys.argv[2])
events, decoder = {}, json.JSONDecoder()
for path in sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files):
    blob = open(path, "rb").read()
    for m in re.finditer(rb'\{"at":"', blob):
        text = blob[m.start():m.start() + (1 << 16)].decode("utf-8", "replace")
        try:
            value, end = decoder.raw_decode(text)
        except ValueError:
            continue
        if isinstance(value, dict) and {"seq", "id", "type", "at", "payload"} <= value.keys():
            if events.setdefault(value["seq"], text[:end]) != text[:end]:
                sys.exit(f"two different outbox events with seq {value['seq']}")
if sorted(events) != list(range(1, held + 1)):
    sys.exit(f"outbox events found: {sorted(events)}; the CRM holds 1..{held}")
for seq in sorted(events):
    print(events[seq])
EOF

# The QR code drawing (lines of block characters) becomes one line.
awk '/^[ █▀▄]+$/ && /[█▀▄]/ { n++; next } n { print "<QR CODE, " n " lines>"; n = 0 } { print }' \
    "$dir/demo.raw" >"$dir/demo.txt"

# Literal values that vary, found in all three files, become placeholders: customer ids
# numbered in order of first appearance, and the run's own timestamps and dates.
files=("$dir/demo.txt" "$dir/till.raw" "$dir/crm.raw")
escape() { sed 's/[][\\.*^$+?(){}|#]/\\&/g'; }
{
    printf 's#%s#<DATA>#g\n' "$(escape <<<"$data")"
    grep -ohE 'demo-store-[0-9a-f]{16}' "${files[@]}" | awk '!seen[$0]++ { print $0 " " ++n }' |
        while read -r id n; do printf 's#%s#<CUSTOMER_%s>#g\n' "$id" "$n"; done
    for kind in TIME DATE; do
        [[ $kind == TIME ]] && re='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2})' || re='[0-9]{4}-[0-9]{2}-[0-9]{2}'
        grep -ohE "$re" "${files[@]}" | sort -u | awk -v r="$recent" '$0 >= r' |
            while read -r t; do printf 's#%s#<%s>#g\n' "$(escape <<<"$t")" "$kind"; done
    done
} >"$dir/literals.sed"
mkdir -p "$out"
normalise() {
    sed -E -f "$dir/literals.sed" \
        -e 's#(127\.0\.0\.1|localhost):[0-9]+#\1:<PORT>#g' \
        -e 's#LGV1:[0-9A-Z $%*+./:-]+#<SIGNED VOUCHER TEXT>#g' \
        -e 's#"(id|hash|public_key)":"[^"]*"#"\1":"<\U\1\E>"#g' \
        -e 's#p50 [0-9.]+ ms  p90 [0-9.]+ ms  p99 [0-9.]+ ms  max [0-9.]+ ms#p50 <MS>  p90 <MS>  p99 <MS>  max <MS>#' \
        "$1" >"$out/$2"
}
normalise "$dir/demo.txt" demo.txt
normalise "$dir/till.raw" till.txt
normalise "$dir/crm.raw" crm.jsonl
echo "$0: recorded $(wc -l <"$out/demo.txt") lines of demo output, $got till answers and $held CRM events in $out"
