#!/usr/bin/env bash
# Builds the Debian package and installs it into a scratch root, asserting that every file is
# where it belongs, then upgrades (a locally edited conffile must survive), removes and purges.
#
#   cross/package-test.sh [amd64|arm64|armhf] [--no-build]
#
# amd64 (default) is built natively with `cargo deb`; arm64/armhf package the binaries that
# cross/build.sh made (`--no-build` is implied for them; run cross/build.sh first).
# Installing uses `dpkg --root=DIR --force-script-chrootless`: the maintainer scripts run on
# this machine with DPKG_ROOT=DIR (debian/postinst honours it), nothing touches the real system.
# Needs: cargo-deb (installed with `cargo install cargo-deb --locked` when missing), dpkg,
# useradd/groupadd (passwd). The lead's config/gateway.toml must exist (it is packaged).
set -euo pipefail
cd "$(dirname "$0")/.."

arch=amd64
build=1
for arg in "$@"; do
  case "$arg" in
    amd64|arm64|armhf) arch=$arg ;;
    --no-build) build=0 ;;
    *) echo "usage: cross/package-test.sh [amd64|arm64|armhf] [--no-build]" >&2; exit 2 ;;
  esac
done
case "$arch" in
  amd64) triple=""; qemu="" ;;
  arm64) triple=aarch64-unknown-linux-gnu; qemu="cross/qemu-run.sh aarch64"; build=0 ;;
  armhf) triple=armv7-unknown-linux-gnueabihf; qemu="cross/qemu-run.sh arm"; build=0 ;;
esac

fail() { echo "package-test: FAIL: $*" >&2; exit 1; }
pass() { echo "package-test: ok: $*"; }

[ -f config/gateway.toml ] || fail "config/gateway.toml is missing (the commented default configuration the package installs as /etc/loyalty-gateway/gateway.toml)"
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
export PATH="$PATH:/usr/sbin:/sbin"

target_dir=${CARGO_TARGET_DIR:-target}
out_dir="$target_dir/debian"
mkdir -p "$out_dir"
deb_args=(--locked --output "$out_dir")
[ -n "$triple" ] && deb_args+=(--target "$triple" --profile pi)
[ "$build" = 0 ] && deb_args+=(--no-build)
if [ -n "$triple" ] && [ ! -x "$target_dir/$triple/pi/loyalty-gateway" ]; then
  fail "$target_dir/$triple/pi/loyalty-gateway missing: run cross/build.sh first"
fi
started=$(date +%s)
deb=$(cargo deb "${deb_args[@]}" | tail -n 1)
[ -f "$deb" ] || fail "cargo deb did not produce a package (got '$deb')"
echo "package-test: built $deb ($(stat -c %s "$deb") bytes) in $(( $(date +%s) - started ))s"

# --- the package itself -------------------------------------------------------------------------
info=$(dpkg-deb --info "$deb")
grep -q "^ Architecture: $arch\$" <<<"$info" || fail "architecture is not $arch"
grep -q '^ Package: loyalty-gateway$' <<<"$info" || fail "package name"
grep -q "^ Depends: libc6 (>= 2.34), libgcc-s1, passwd$" <<<"$info" || fail "Depends is not libc6 (>= 2.34), libgcc-s1, passwd"
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
[ "$conffiles" = "/etc/loyalty-gateway/gateway.toml" ] || fail "conffiles is '$conffiles'"
pass "control: Architecture $arch, Depends, conffile /etc/loyalty-gateway/gateway.toml"

# --- a scratch root ------------------------------------------------------------------------------
root=$(mktemp -d /tmp/loyalty-gateway-root.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers" \
  "$root/etc/systemd/system" "$root/var/log"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\ndialout:x:20:\n' >"$root/etc/group"
printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
printf 'root:*::\ndialout:*::\n' >"$root/etc/gshadow"
chmod 600 "$root/etc/shadow" "$root/etc/gshadow"
dpkg_root() {
  dpkg --root="$root" --force-script-chrootless --force-depends --force-architecture \
    --log=/dev/null "$@"
}

dpkg_root -i "$deb" >"$root/install.log" 2>&1 || { cat "$root/install.log"; fail "dpkg -i"; }

# --- files where they belong ---------------------------------------------------------------------
bin="$root/usr/bin/loyalty-gateway"
[ -x "$bin" ] || fail "/usr/bin/loyalty-gateway missing or not executable"
version_line=$($qemu "$bin" --version)
[[ "$version_line" == "loyalty-gateway "* ]] || fail "--version printed '$version_line'"
pass "/usr/bin/loyalty-gateway runs: $version_line"

unit=""
for candidate in lib/systemd/system usr/lib/systemd/system; do
  [ -f "$root/$candidate/loyalty-gateway.service" ] && unit="$root/$candidate/loyalty-gateway.service"
done
[ -n "$unit" ] || fail "loyalty-gateway.service not installed"
cmp -s "$unit" systemd/loyalty-gateway.service || fail "installed unit differs from systemd/loyalty-gateway.service"
pass "unit at ${unit#"$root"}"

conf="$root/etc/loyalty-gateway/gateway.toml"
[ -f "$conf" ] || fail "/etc/loyalty-gateway/gateway.toml missing"
cmp -s "$conf" config/gateway.toml || fail "installed gateway.toml differs from config/gateway.toml"
grep -qx /etc/loyalty-gateway/gateway.toml "$root/var/lib/dpkg/info/loyalty-gateway.conffiles" \
  || fail "gateway.toml not registered as a conffile"
[ -f "$root/usr/share/doc/loyalty-gateway/examples/99-loyalty-gateway.rules" ] || fail "udev example missing"
pass "configuration, conffile registration, udev example"

user_line=$(grep '^loyalty-gateway:' "$root/etc/passwd") || fail "system user not created"
IFS=: read -r _ _ uid gid _ home shell <<<"$user_line"
[ "$uid" -lt 1000 ] || fail "uid $uid is not a system uid"
[ "$home" = /var/lib/loyalty-gateway ] || fail "home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "shell is $shell"
grep -q "^loyalty-gateway:x:$gid:" "$root/etc/group" || fail "group loyalty-gateway missing"
grep -Eq '^dialout:x:20:(.*,)?loyalty-gateway(,.*)?$' "$root/etc/group" || fail "user not in dialout"
pass "system user loyalty-gateway (uid $uid, nologin, in dialout)"

[ "$(stat -c '%u:%g %a' "$root/var/lib/loyalty-gateway")" = "$uid:$gid 750" ] \
  || fail "/var/lib/loyalty-gateway is $(stat -c '%u:%g %a' "$root/var/lib/loyalty-gateway")"
[ "$(stat -c '%u:%g %a' "$root/etc/loyalty-gateway")" = "0:$gid 750" ] \
  || fail "/etc/loyalty-gateway is $(stat -c '%u:%g %a' "$root/etc/loyalty-gateway")"
[ "$(stat -c '%u:%g %a' "$conf")" = "0:$gid 640" ] || fail "gateway.toml is $(stat -c '%u:%g %a' "$conf")"
pass "state dir 0750 loyalty-gateway, config 0640 root:loyalty-gateway"

wants="$root/etc/systemd/system/multi-user.target.wants/loyalty-gateway.service"
[ -L "$wants" ] || fail "service not enabled (no multi-user.target.wants link)"
pass "service enabled"

if command -v systemd-analyze >/dev/null 2>&1; then
  check=$(mktemp -d)
  sed "s#/usr/bin/loyalty-gateway#$bin#g" "$unit" >"$check/loyalty-gateway.service"
  systemd-analyze verify "$check/loyalty-gateway.service" || fail "systemd-analyze verify of the installed unit"
  rm -rf "$check"
  pass "systemd-analyze verify (installed unit)"
fi

# --- upgrade keeps a local edit ------------------------------------------------------------------
echo "# local edit by store IT" >>"$conf"
dpkg_root -i "$deb" >"$root/upgrade.log" 2>&1 || { cat "$root/upgrade.log"; fail "reinstall"; }
grep -q '^# local edit by store IT$' "$conf" || fail "upgrade lost the local edit of gateway.toml"
[ "$(grep -c '^loyalty-gateway:' "$root/etc/passwd")" = 1 ] || fail "upgrade duplicated the user"
pass "upgrade kept the edited conffile and the user"

# --- remove, purge -------------------------------------------------------------------------------
touch "$root/var/lib/loyalty-gateway/ledger-placeholder"
dpkg_root -r loyalty-gateway >"$root/remove.log" 2>&1 || { cat "$root/remove.log"; fail "dpkg -r"; }
[ ! -e "$bin" ] || fail "binary left after remove"
[ -f "$conf" ] || fail "remove deleted the conffile (only purge may)"
dpkg_root -P loyalty-gateway >"$root/purge.log" 2>&1 || { cat "$root/purge.log"; fail "dpkg -P"; }
[ ! -e "$conf" ] || fail "conffile left after purge"
[ ! -e "$wants" ] || fail "enablement link left after purge"
[ -f "$root/var/lib/loyalty-gateway/ledger-placeholder" ] || fail "purge deleted the ledger"
pass "remove keeps the configuration; purge removes it and keeps the ledger"
echo "package-test: all checks passed for $deb"
