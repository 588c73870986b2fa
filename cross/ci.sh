#!/usr/bin/env bash
# The Raspberry Pi checks for CI:
#   1. systemd-analyze verify and an offline security score of systemd/loyalty-gateway.service
#   2. the unit's system call filter against the calls the daemon makes (cross/syscall-check.sh)
#   3. release cross builds for aarch64 and armv7 (stripped sizes reported against the 8 MiB target)
#   4. smoke runs of the aarch64 binary under qemu-user: --version, check-config, seeding and
#      verifying a scratch store, and that it carries no demo (the tools stay off the Pi)
#   5. the Debian package installed into a scratch root (cross/package-test.sh)
#
#   cross/ci.sh [--package-arch amd64|arm64|armhf]
#
# amd64 (default) costs a third release build; arm64/armhf package the cross build of step 3.
# Measured (2 shared cores, load 7-9): 8 min with dependencies cached; a cold run compiles the
# dependencies three times in release (about 5-9 min each here). Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
package_arch=amd64
while [ $# -gt 0 ]; do
  case "$1" in
    --package-arch) package_arch=${2:?}; shift 2 ;;
    *) echo "usage: cross/ci.sh [--package-arch amd64|arm64|armhf]" >&2; exit 2 ;;
  esac
done
target_dir=${CARGO_TARGET_DIR:-target}
max_bytes=$((8 * 1024 * 1024))
t0=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - t0 ))s elapsed)"; }

need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v strace >/dev/null 2>&1 || need+=(strace)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

step "1/5 systemd unit"
cargo build --locked --bin loyalty-gateway
debug_bin=$(realpath "$target_dir/debug/loyalty-gateway")
verify_dir=$(mktemp -d)
trap 'rm -rf "$verify_dir"' EXIT
# verify needs ExecStart's binary to exist: point a copy of the unit at the one just built.
sed "s#/usr/bin/loyalty-gateway#$debug_bin#g" systemd/loyalty-gateway.service \
  >"$verify_dir/loyalty-gateway.service"
systemd-analyze verify "$verify_dir/loyalty-gateway.service"
systemd-analyze security --offline=true --threshold=30 "$verify_dir/loyalty-gateway.service" | tail -n 1

step "2/5 system call filter"
cross/syscall-check.sh "$debug_bin"

step "3/5 cross builds"
# What ships to the Pi: the root package without its default `tools` feature. None of the tools
# (demo, load generator, reference CRM, test PKI) and no hub or PostgreSQL code may be in its
# dependency tree.
shipped_tree=$(cargo tree --locked -p loyalty-gateway --no-default-features -e normal --prefix none)
if grep -E '^(loyalty-tools|loyalty-hub|rcgen|tokio-postgres|postgres|deadpool-postgres) ' <<<"$shipped_tree"; then
  echo "ci: the Pi binary's dependency tree carries a tool (above)" >&2; exit 1
fi
cross/build.sh all
for triple in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  size=$(stat -c %s "$target_dir/$triple/pi/loyalty-gateway")
  # A figure to report, not a pass/fail test (sizes are measured, not asserted).
  echo "$triple: stripped binary $size bytes (target <= $max_bytes)"
  [ "$size" -le "$max_bytes" ] || echo "WARNING: $triple binary is above the 8 MiB target" >&2
done

step "4/5 aarch64 smoke runs under qemu"
aarch64_bin=$(realpath "$target_dir/aarch64-unknown-linux-gnu/pi/loyalty-gateway")
out=$(cross/qemu-run.sh aarch64 "$aarch64_bin" --version)
echo "$out"
[[ "$out" == "loyalty-gateway "* ]] || { echo "ci: unexpected --version output" >&2; exit 1; }
# More of the binary: the example configuration. No serial ports: qemu-user cannot emulate them.
cross/qemu-run.sh aarch64 "$aarch64_bin" check-config --config config/gateway.toml
# The Pi binary carries no demo: seed a scratch store and verify its journal (sled, fsync and
# the hash chain under emulation).
smoke_dir=$(mktemp -d)
sed "s#^data_dir = .*#data_dir = \"$smoke_dir/data\"#" config/gateway.toml >"$smoke_dir/gateway.toml"
timeout 300 cross/qemu-run.sh aarch64 "$aarch64_bin" seed-test-customers --count 2000 \
  --config "$smoke_dir/gateway.toml"
timeout 300 cross/qemu-run.sh aarch64 "$aarch64_bin" verify --config "$smoke_dir/gateway.toml" | tail -n 3
if cross/qemu-run.sh aarch64 "$aarch64_bin" demo --help >/dev/null 2>&1; then
  echo "ci: the Pi binary must not carry the demo (tools feature)" >&2; exit 1
fi
rm -rf "$smoke_dir"

step "5/5 Debian package ($package_arch) into a scratch root"
cross/package-test.sh "$package_arch"

step "done"
