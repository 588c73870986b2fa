#!/usr/bin/env bash
# The Raspberry Pi checks for CI (about 10-15 minutes on 2 cores; see cross/README.md):
#   1. systemd-analyze verify (and an offline security score) of systemd/loyalty-gateway.service
#   2. release cross builds for aarch64 and armv7 (stripped sizes checked against 8 MiB)
#   3. smoke runs of the aarch64 binary under qemu-user: --version, check-config, the demo
#   4. the amd64 Debian package, installed into a scratch root (cross/package-test.sh)
# Each step prints its duration. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
target_dir=${CARGO_TARGET_DIR:-target}
max_bytes=$((8 * 1024 * 1024))
t0=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - t0 ))s elapsed)"; }

step "1/4 systemd unit"
command -v systemd-analyze >/dev/null 2>&1 || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
}
cargo build --locked --bin loyalty-gateway
verify_dir=$(mktemp -d)
trap 'rm -rf "$verify_dir"' EXIT
# verify needs ExecStart's binary to exist: point a copy of the unit at the one just built.
sed "s#/usr/bin/loyalty-gateway#$(realpath "$target_dir/debug/loyalty-gateway")#g" \
  systemd/loyalty-gateway.service >"$verify_dir/loyalty-gateway.service"
systemd-analyze verify "$verify_dir/loyalty-gateway.service"
systemd-analyze security --offline=true --threshold=30 "$verify_dir/loyalty-gateway.service" | tail -n 1

step "2/4 cross builds"
cross/build.sh all
for triple in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  size=$(stat -c %s "$target_dir/$triple/release/loyalty-gateway")
  [ "$size" -le "$max_bytes" ] || { echo "ci: $triple binary is $size bytes (> 8 MiB)" >&2; exit 1; }
done

step "3/4 aarch64 smoke run under qemu"
out=$(cross/qemu-run.sh aarch64 "$target_dir/aarch64-unknown-linux-gnu/release/loyalty-gateway" --version)
echo "$out"
[[ "$out" == "loyalty-gateway "* ]] || { echo "ci: unexpected --version output" >&2; exit 1; }
# More of the binary: the example configuration, then the in-process demo store (sled, tokio,
# rules, ledger replay) for a few seconds. No serial ports: qemu-user cannot emulate them.
aarch64_bin=$(realpath "$target_dir/aarch64-unknown-linux-gnu/release/loyalty-gateway")
cross/qemu-run.sh aarch64 "$aarch64_bin" check-config --config config/gateway.toml
timeout 300 cross/qemu-run.sh aarch64 "$aarch64_bin" demo --no-broker --duration-secs 1 | tail -n 3

step "4/4 Debian package (amd64) into a scratch root"
cross/package-test.sh amd64

step "done"
