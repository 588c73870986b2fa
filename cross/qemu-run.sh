#!/bin/sh
# Runs a Pi binary under qemu-user: cross/qemu-run.sh <aarch64|arm> BINARY [ARGS...]
# Cargo's runner for the Pi targets (.cargo/config.toml). Passes `-L <cross sysroot>` only when
# the architecture's multiarch libc is not installed and QEMU_LD_PREFIX is not set: giving qemu
# both makes it hang (FIELD-NOTES). Serial ports do not work under qemu-user (TCGETS2 is not
# emulated): run serial tests natively.
set -eu
arch=${1:?usage: qemu-run.sh <aarch64|arm> BINARY [ARGS...]}
shift
case "$arch" in
  aarch64) sysroot=/usr/aarch64-linux-gnu; loader=/lib/ld-linux-aarch64.so.1 ;;
  arm) sysroot=/usr/arm-linux-gnueabihf; loader=/lib/ld-linux-armhf.so.3 ;;
  *) echo "qemu-run.sh: unknown architecture '$arch' (aarch64 or arm)" >&2; exit 2 ;;
esac
command -v "qemu-$arch" >/dev/null 2>&1 || {
  echo "qemu-run.sh: qemu-$arch not found: apt-get install qemu-user" >&2
  exit 127
}
if [ -e "$loader" ] || [ -n "${QEMU_LD_PREFIX:-}" ]; then
  exec "qemu-$arch" "$@"
fi
exec "qemu-$arch" -L "$sysroot" "$@"
