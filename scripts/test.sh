#!/usr/bin/env bash
# The README's test command: installs what the tests need when it is missing (Mosquitto and its
# clients, strace for the fsync check, PostgreSQL's server binaries for the hub, Python's
# jsonschema and yaml for the OpenAPI payload check, Chromium and chromedriver for the browser
# tests; apt-get as root, with sudo otherwise), then runs `cargo test` over the
# whole workspace with any arguments given (`scripts/test.sh --test gateway_mqtt`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import jsonschema, yaml' 2>/dev/null || need_apt+=(python3-jsonschema python3-yaml)
# PostgreSQL for the hub's tests (the harness starts a private cluster; nothing is started here).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  if ! command -v apt-get >/dev/null 2>&1 || { [ ${#as_root[@]} -gt 0 ] && ! command -v sudo >/dev/null 2>&1; }; then
    echo "scripts/test.sh: the tests need these Debian packages: ${need_apt[*]}" >&2
    exit 2
  fi
  echo "scripts/test.sh: installing ${need_apt[*]}" >&2
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
exec cargo test "$@"
