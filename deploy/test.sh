#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first
# (deploy/install.sh); the tests start their own nats-server and PostgreSQL
# on free loopback ports, so nothing needs to be running beforehand.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./deploy/install.sh
cargo test --workspace --locked "$@"
