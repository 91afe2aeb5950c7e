#!/usr/bin/env bash
# Sets up and runs the ledger locally: installs what is missing, starts the
# local nats-server and PostgreSQL (deploy/local/start.sh), builds the ledger,
# starts `ledger serve`, and runs the demo against it. The service keeps
# running until Ctrl-C; its log is .local/ledger.log.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./deploy/local/start.sh
cargo build --release --locked -p ledger

export LEDGER_ADMIN_TOKEN="${LEDGER_ADMIN_TOKEN:-local-admin-token}"
export LEDGER_HTTP_ADDR="${LEDGER_HTTP_ADDR:-127.0.0.1:8080}"
mkdir -p .local
./target/release/ledger serve --role all >>.local/ledger.log 2>&1 &
service=$!
trap 'kill $service 2>/dev/null; wait $service 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://$LEDGER_HTTP_ADDR/readyz" >/dev/null 2>&1 && break
  kill -0 "$service" 2>/dev/null || { tail -20 .local/ledger.log >&2; exit 1; }
  sleep 0.2
done
./target/release/ledger demo --url "http://$LEDGER_HTTP_ADDR"
echo
echo "The ledger is running on http://$LEDGER_HTTP_ADDR (admin token: \$LEDGER_ADMIN_TOKEN)."
echo "Ctrl-C stops it; deploy/local/stop.sh stops nats-server and PostgreSQL."
wait "$service"
