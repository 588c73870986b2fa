#!/usr/bin/env bash
# Checks the unit's SystemCallFilter= against the system calls the daemon really makes: runs
# `loyalty-gateway demo --no-broker` (sled, tokio, rules, ledger, vouchers) under strace and
# fails when a call would be refused by systemd/loyalty-gateway.service (EPERM in production).
#
#   cross/syscall-check.sh [BINARY]     (default: $CARGO_TARGET_DIR/release/loyalty-gateway)
#
# Needs strace and systemd-analyze. Native architecture only. Paths the demo does not take
# (serial ports, MQTT, the HTTP API, sd_notify, adjtimex) use socket/ioctl/sendto-family calls
# that @system-service allows; extend the exercised command when that changes.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-${CARGO_TARGET_DIR:-target}/release/loyalty-gateway}
[ -x "$binary" ] || { echo "syscall-check: $binary not found" >&2; exit 2; }
binary=$(realpath "$binary")
unit=${UNIT:-systemd/loyalty-gateway.service}
command -v strace >/dev/null 2>&1 || { echo "syscall-check: strace not installed (apt-get install strace)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

expand() { # expand NAME...: system call names, with @groups expanded recursively
  local item
  for item in "$@"; do
    case "$item" in
      @*) systemd-analyze syscall-filter "$item" | sed -n '2,$p' | sed 's/^ *//' \
            | grep -v -e '^#' -e '^$' | while read -r n; do expand "$n"; done ;;
      *) echo "$item" ;;
    esac
  done
}

allow=() deny=()
while IFS= read -r line; do
  value=${line#SystemCallFilter=}
  if [[ "$value" == "~"* ]]; then
    read -ra items <<<"${value#\~}"; deny+=("${items[@]}")
  else
    read -ra items <<<"$value"; allow+=("${items[@]}")
  fi
done < <(grep '^SystemCallFilter=' "$unit")
expand "${allow[@]}" | sort -u >"$work/allowed"
if [ ${#deny[@]} -gt 0 ]; then expand "${deny[@]}" | sort -u >"$work/denied"; else : >"$work/denied"; fi

(cd "$work" && timeout 300 strace -f -c -o "$work/summary" "$binary" \
  demo --no-broker --duration-secs 1 >/dev/null 2>&1) || { echo "syscall-check: the demo failed" >&2; exit 1; }
awk 'NR > 2 && $0 !~ /^-/ && $NF != "total" { print $NF }' "$work/summary" | sort -u >"$work/used"
refused=$( { comm -23 "$work/used" "$work/allowed"; comm -12 "$work/used" "$work/denied"; } | sort -u)
if [ -n "$refused" ]; then
  echo "syscall-check: the unit would refuse: $(echo $refused)" >&2
  exit 1
fi
echo "syscall-check: ok: all $(wc -l <"$work/used") system calls the demo makes pass the unit's filter"
