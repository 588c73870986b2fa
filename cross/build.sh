#!/usr/bin/env bash
# Cross-builds the gateway for the Raspberry Pi with the `pi` profile (size-optimised release, see Cargo.toml).
#
#   cross/build.sh <aarch64|armv7|all> [--profile PROFILE]
#
# aarch64 = aarch64-unknown-linux-gnu (64-bit Raspberry Pi OS / Debian on Pi 3, 4, 5, Zero 2 W);
# armv7 = armv7-unknown-linux-gnueabihf (32-bit OS on the same boards).
# Installs what is missing: the rustup target always; the Debian cross gcc (and qemu-user) with
# apt-get when run as root. Prints the path and size of each stripped binary.
# Honours CARGO_TARGET_DIR. Sets LOYALTY_BUILD_EPOCH (the clock's floor, see src/clock.rs) to the
# commit time unless already set, so rebuilding the same commit gives the same binary.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: cross/build.sh <aarch64|armv7|all> [--profile PROFILE]" >&2; exit 2; }
[ $# -ge 1 ] || usage
which_targets=$1; shift
profile=pi
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done

case "$which_targets" in
  aarch64) arches=(aarch64) ;;
  armv7) arches=(armv7) ;;
  all) arches=(aarch64 armv7) ;;
  *) usage ;;
esac

triple_of() { case "$1" in aarch64) echo aarch64-unknown-linux-gnu ;; armv7) echo armv7-unknown-linux-gnueabihf ;; esac; }
gcc_of() { case "$1" in aarch64) echo aarch64-linux-gnu ;; armv7) echo arm-linux-gnueabihf ;; esac; }
deb_of() { case "$1" in aarch64) echo gcc-aarch64-linux-gnu ;; armv7) echo gcc-arm-linux-gnueabihf ;; esac; }

# --- what is missing --------------------------------------------------------------------------
missing_debs=()
for arch in "${arches[@]}"; do
  command -v "$(gcc_of "$arch")-gcc" >/dev/null 2>&1 || missing_debs+=("$(deb_of "$arch")")
done
command -v qemu-aarch64 >/dev/null 2>&1 || missing_debs+=(qemu-user)
if [ ${#missing_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "cross/build.sh: installing ${missing_debs[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >/dev/null
  else
    echo "cross/build.sh: missing ${missing_debs[*]}; run as root or: sudo apt-get install ${missing_debs[*]}" >&2
    exit 1
  fi
fi
installed_targets=$(rustup target list --installed)
for arch in "${arches[@]}"; do
  triple=$(triple_of "$arch")
  grep -qx "$triple" <<<"$installed_targets" || rustup target add "$triple"
done

# --- build ------------------------------------------------------------------------------------
export LOYALTY_BUILD_EPOCH=${LOYALTY_BUILD_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
target_dir=${CARGO_TARGET_DIR:-target}
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug
for arch in "${arches[@]}"; do
  triple=$(triple_of "$arch")
  prefix=$(gcc_of "$arch")
  env_triple=${triple//-/_}
  # The cc crate (ring's C and assembly) and the linker use the same cross gcc.
  export "CC_${env_triple}=${prefix}-gcc" "AR_${env_triple}=${prefix}-ar"
  started=$(date +%s)
  # The shipped daemon only: the tools (demo, loadgen, reference CRM, test PKI) are a default
  # feature of the root package, off here.
  cargo build --locked --profile "$profile" --target "$triple" -p loyalty-gateway \
    --no-default-features --bin loyalty-gateway
  binary="$target_dir/$triple/$profile_dir/loyalty-gateway"
  # The release profile strips already; strip again in case another profile was asked for.
  "${prefix}-strip" "$binary"
  size=$(stat -c %s "$binary")
  awk -v arch="$arch" -v bin="$binary" -v size="$size" -v secs="$(( $(date +%s) - started ))" \
    'BEGIN { printf "%s: %s, %d bytes (%.2f MiB) stripped, built in %ds\n", arch, bin, size, size / 1048576, secs }'
done
