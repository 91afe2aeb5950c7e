#!/usr/bin/env bash
# Sets up and runs the ledger locally: installs what is missing, starts the
# local nats-server and PostgreSQL (deploy/local/start.sh), builds the
# workspace and runs the service with a demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./deploy/local/start.sh
cargo build --release --locked -p ledger
exec ./target/release/ledger demo "$@"
